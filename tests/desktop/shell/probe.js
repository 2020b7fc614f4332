// Evaluated once inside the shell (org.gnome.Shell.Eval) by test_gnome_shell.py: defines globalThis.aiEfficiencyProbe,
// which reads the AI Efficiency toggle as a user sees it and clicks with a virtual pointer, so a choice goes through
// the shell's own event handling rather than a method call on the toggle.
(() => {
    const {Clutter, Pango} = imports.gi;
    const Main = imports.ui.main;
    const PopupMenu = imports.ui.popupMenu;
    const quickSettings = Main.panel.statusArea.quickSettings;
    const pointer = Clutter.get_default_backend().get_default_seat()
        .create_virtual_device(Clutter.InputDeviceType.POINTER_DEVICE);

    // 43 names the toggle's text `label`, 44 `title`.
    const titleOf = toggle => toggle.title ?? toggle.label;

    function toggle(title) {
        const found = quickSettings.menu._grid.get_children().find(child => titleOf(child) === title);
        if (!found)
            throw new Error(`no toggle titled ${title} in the Quick Settings grid`);
        return found;
    }

    // Pango ellipsizes at draw time, so the label's text stays whole: rebuild the cut Pango makes, the longest
    // prefix that fits with the ellipsis in the label's width.
    function shownText(label) {
        const layout = label.clutter_text.get_layout();
        const text = label.text;
        if (!layout.is_ellipsized())
            return text;
        const measure = layout.copy();
        measure.set_ellipsize(Pango.EllipsizeMode.NONE);
        measure.set_width(-1);
        const width = layout.get_width() / Pango.SCALE;
        for (let length = text.length - 1; length > 0; length--) {
            measure.set_text(`${text.slice(0, length).trimEnd()}…`, -1);
            if (measure.get_pixel_size()[0] <= width)
                return `${text.slice(0, length).trimEnd()}…`;
        }
        return '…';
    }

    function modeItems(menuToggle) {
        return menuToggle.menu._getMenuItems()
            .flatMap(item => item instanceof PopupMenu.PopupMenuSection ? item._getMenuItems() : [item])
            .filter(item => item instanceof PopupMenu.PopupMenuItem);
    }

    function click(actor) {
        const [x, y] = actor.get_transformed_position();
        const [width, height] = actor.get_transformed_size();
        pointer.notify_absolute_motion(Clutter.CURRENT_TIME, x + width / 2, y + height / 2);
        pointer.notify_button(Clutter.CURRENT_TIME, Clutter.BUTTON_PRIMARY, Clutter.ButtonState.PRESSED);
        pointer.notify_button(Clutter.CURRENT_TIME, Clutter.BUTTON_PRIMARY, Clutter.ButtonState.RELEASED);
    }

    globalThis.aiEfficiencyProbe = {
        present: title => quickSettings.menu._grid.get_children().some(child => titleOf(child) === title),
        describe(title) {
            const found = toggle(title);
            const label = found._label;
            return {
                title: titleOf(found),
                shown: shownText(label),
                visible: found.visible && label.mapped,
                checked: found.checked,
                icon: found.iconName,
                // The popup drops clicks until its opening transition has completed (a later frame, even unanimated).
                quickSettingsOpen: quickSettings.menu.isOpen && !quickSettings.menu._boxPointer._muteInput,
                menuOpen: found.menu.isOpen,
                // The menu's box fades in after the menu has opened (even without animations, on a later frame).
                menuShown: found.menu.isOpen && found.menu.box.opacity === 255,
                header: found.menu._headerTitle.text,
                subtitle: found.menu._headerSubtitle.text,
                modes: modeItems(found).map(item => item.label.text),
                dotted: modeItems(found).filter(item => item._ornament === PopupMenu.Ornament.DOT)
                    .map(item => item.label.text),
            };
        },
        // Until the startup animation ends a cover pane takes every click, and the panel is still sliding in.
        settled: () => !Main.layoutManager._startingUp && !Main.overview.animationInProgress,
        // The overview a session starts in and the banner unsafe mode raises would hide the toggle in a screenshot.
        tidy() {
            Main.overview.hide();
            Main.messageTray.getSources().forEach(source => source.destroy());
        },
        openQuickSettings: () => click(quickSettings),
        // On its title, as a user would: the arrow beside it is another button.
        click: title => click(toggle(title)._label),
        openMenu: title => click(toggle(title)._menuButton),
        choose(title, mode) {
            const item = modeItems(toggle(title)).find(candidate => candidate.label.text === mode);
            if (!item)
                throw new Error(`no menu item ${mode}`);
            click(item);
        },
    };
})();
