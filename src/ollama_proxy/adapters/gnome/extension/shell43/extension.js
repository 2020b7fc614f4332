/* exported init */
// Shell 43-44 build: legacy imports. The logic lives in logic.js, installed next to this file.
'use strict';

const {Gio, GLib, GObject} = imports.gi;
const ByteArray = imports.byteArray;
const Main = imports.ui.main;
const PopupMenu = imports.ui.popupMenu;
const QuickSettings = imports.ui.quickSettings;
const Me = imports.misc.extensionUtils.getCurrentExtension();

// logic.js and view.js are shared with the 45+ build: see their headers.
function loadShared(name, names, values) {
    const [, bytes] = GLib.file_get_contents(`${Me.path}/${name}`);
    return new Function(...names, ByteArray.toString(bytes))(...values);
}

// Loaded once: registering the GObject classes again on a second enable() would fail.
let EfficiencyIndicator = null;

class Extension {
    enable() {
        EfficiencyIndicator ??= loadShared('view.js', ['GObject', 'PopupMenu', 'QuickSettings'],
            [GObject, PopupMenu, QuickSettings]);
        this._indicator = new EfficiencyIndicator();
        const quickSettings = Main.panel.statusArea.quickSettings;
        if (quickSettings.addExternalIndicator) {
            quickSettings.addExternalIndicator(this._indicator);
        } else {
            quickSettings._indicators.insert_child_at_index(this._indicator, 0);
            quickSettings._addItems(this._indicator.quickSettingsItems);
        }
        this._indicator.follow(loadShared('logic.js', ['Gio', 'GLib'], [Gio, GLib])(this._indicator.toggle, log));
    }

    disable() {
        this._indicator.retire();
        this._indicator = null;
    }
}

function init() {
    return new Extension();
}
