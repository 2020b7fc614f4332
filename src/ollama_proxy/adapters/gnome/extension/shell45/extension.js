// Shell 45+ build: ES modules. The logic and the view live in logic.js and view.js, installed next to this
// file and shared with the 43-44 build (see their headers).
import Gio from 'gi://Gio';
import GLib from 'gi://GLib';
import GObject from 'gi://GObject';
import * as Main from 'resource:///org/gnome/shell/ui/main.js';
import * as PopupMenu from 'resource:///org/gnome/shell/ui/popupMenu.js';
import * as QuickSettings from 'resource:///org/gnome/shell/ui/quickSettings.js';
import {Extension} from 'resource:///org/gnome/shell/extensions/extension.js';

function loadShared(directory, name, names, values) {
    const [, bytes] = GLib.file_get_contents(`${directory}/${name}`);
    return new Function(...names, new TextDecoder().decode(bytes))(...values);
}

// Loaded once: registering the GObject classes again on a second enable() would fail.
let EfficiencyIndicator = null;

export default class AiEfficiencyExtension extends Extension {
    enable() {
        EfficiencyIndicator ??= loadShared(this.path, 'view.js', ['GObject', 'PopupMenu', 'QuickSettings'],
            [GObject, PopupMenu, QuickSettings]);
        this._indicator = new EfficiencyIndicator();
        Main.panel.statusArea.quickSettings.addExternalIndicator(this._indicator);
        this._indicator.follow(loadShared(this.path, 'logic.js', ['Gio', 'GLib'], [Gio, GLib])(
            this._indicator.toggle, message => console.log(message)));
    }

    disable() {
        this._indicator.retire();
        this._indicator = null;
    }
}
