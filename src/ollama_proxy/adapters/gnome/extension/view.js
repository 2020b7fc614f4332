// The toggle and indicator shared by both builds, run like logic.js as the body of
// `new Function('GObject', 'PopupMenu', 'QuickSettings', src)`; it returns the indicator class.
'use strict';

const TITLE = 'AI Efficiency';
const ICON = 'power-profile-balanced-symbolic';  // until the controller names the mode's icon
// 43 names the toggle's text `label`, 44 renamed it `title`.
const TEXT_PROPERTY = 'title' in QuickSettings.QuickToggle.prototype ? 'title' : 'label';

const EfficiencyToggle = GObject.registerClass(
class EfficiencyToggle extends QuickSettings.QuickMenuToggle {
    _init() {
        super._init({[TEXT_PROPERTY]: TITLE, iconName: ICON, toggleMode: false});
        this.menu.setHeader(ICON, TITLE);
        this._modes = new PopupMenu.PopupMenuSection();
        this.menu.addMenuItem(this._modes);
        this._items = new Map();
        this.onChoose = () => {};
        this.onToggle = () => {};
        // toggleMode is off: checked follows the proxy's mode, and a click asks the proxy for the other one.
        this.connect('clicked', () => this.onToggle());
    }

    showModes(modes, current) {
        if (modes) {
            this._modes.removeAll();
            this._items.clear();
            for (const mode of modes) {
                const item = new PopupMenu.PopupMenuItem(mode);
                item.connect('activate', () => this.onChoose(mode));
                this._modes.addMenuItem(item);
                this._items.set(mode, item);
            }
        }
        for (const [mode, item] of this._items)
            item.setOrnament(mode === current ? PopupMenu.Ornament.DOT : PopupMenu.Ornament.NONE);
    }

    showState(text, checked, icon) {
        this.iconName = icon;
        this.menu.setHeader(icon, TITLE, text);
        this.checked = checked;
    }

    showAbsent(text, icon) {
        this._modes.removeAll();
        this._items.clear();
        this.iconName = icon;
        this.menu.setHeader(icon, TITLE, text);
        this.checked = false;
    }
});

const EfficiencyIndicator = GObject.registerClass(
class EfficiencyIndicator extends QuickSettings.SystemIndicator {
    _init() {
        super._init();
        this._indicator = this._addIndicator();
        this.toggle = new EfficiencyToggle();
        // The panel icon is the toggle's: one place decides it.
        this.toggle.bind_property('icon-name', this._indicator, 'icon-name', GObject.BindingFlags.SYNC_CREATE);
        this.quickSettingsItems.push(this.toggle);
    }

    // What both builds' enable() and disable() do once the indicator is in the panel: the toggle's
    // choices go to the controller (logic.js), which follows the proxy from then on.
    follow(controller) {
        this._controller = controller;
        this.toggle.onChoose = mode => controller.setMode(mode);
        this.toggle.onToggle = () => controller.toggle();
        controller.start();
    }

    retire() {
        this._controller?.stop();
        this._controller = null;
        this.quickSettingsItems.forEach(item => item.destroy());
        this.destroy();
    }
});

return EfficiencyIndicator;
