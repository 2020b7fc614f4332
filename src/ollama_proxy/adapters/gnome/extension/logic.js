// The AI Efficiency logic shared by both builds. It has no import or export on purpose: the Shell 43-44
// build (legacy imports) and the 45+ build (ES modules) both read this file and run it as the body of
// `new Function('Gio', 'GLib', src)`, so one source serves both module systems. It returns makeController.
'use strict';

const BUS_NAME = 'ie.fio.OllamaProxy';
const OBJECT_PATH = '/ie/fio/OllamaProxy';
const EFFICIENCY = 'ie.fio.OllamaProxy.Efficiency';
const ROUTING = 'ie.fio.OllamaProxy.Routing';
const NOT_RUNNING = 'Proxy not running';
const BALANCED = 'balanced';
// What a click on the toggle switches to from balanced before any other mode was seen.
const FIRST_OTHER = 'efficiency';
// GNOME's own power-profile icons, so the panel reads like the Power Mode indicator: the mode in force
// decides (what auto resolved to); every saving mode shows the power-saver leaf.
const ICON_BALANCED = 'power-profile-balanced-symbolic';
const ICONS = {performance: 'power-profile-performance-symbolic', balanced: ICON_BALANCED,
    efficiency: 'power-profile-power-saver-symbolic', quiet: 'power-profile-power-saver-symbolic',
    'ultra-efficiency': 'power-profile-power-saver-symbolic'};

function call(connection, iface, method, params, replyType) {
    return new Promise((resolve, reject) => {
        connection.call(BUS_NAME, OBJECT_PATH, iface, method, params,
            replyType ? new GLib.VariantType(replyType) : null,
            Gio.DBusCallFlags.NONE, -1, null, (conn, result) => {
                try {
                    resolve(conn.call_finish(result).deepUnpack());
                } catch (error) {
                    reject(error);
                }
            });
    });
}

function getProperty(connection, iface, name) {
    return call(connection, 'org.freedesktop.DBus.Properties', 'Get',
        new GLib.Variant('(ss)', [iface, name]), '(v)').then(([value]) => value.deepUnpack());
}

// view: {showModes(modes, current), showState(text, checked, icon), showAbsent(text, icon)}; nothing here throws
// into the shell.
function makeController(view, log) {
    let connection = null;
    let watchId = 0;
    let subscriptions = [];
    let state = {mode: '', effective: '', backend: ''};
    // The toggle switches between balanced and this, as Shell's Power Mode toggle does with its last profile.
    let lastOther = FIRST_OTHER;

    function render() {
        const mode = state.effective && state.effective !== state.mode
            ? `${state.mode} → ${state.effective}` : state.mode;
        const text = state.backend ? `${mode} · ${state.backend}` : mode;
        // Checked means "not the default": any mode but balanced changes how the proxy routes.
        if (state.mode && state.mode !== BALANCED)
            lastOther = state.mode;
        view.showState(text, state.mode !== BALANCED, ICONS[state.effective || state.mode] ?? ICON_BALANCED);
    }

    function report(error) {
        log(`AI Efficiency: ${error.message}`);
    }

    async function refresh() {
        const [modes] = await call(connection, EFFICIENCY, 'ListModes', null, '(as)');
        state.mode = await getProperty(connection, EFFICIENCY, 'Mode');
        state.effective = await getProperty(connection, EFFICIENCY, 'EffectiveMode');
        state.backend = await getProperty(connection, ROUTING, 'LastBackend').catch(() => '');
        view.showModes(modes, state.mode);
        render();
    }

    function subscribe(conn) {
        subscriptions.push(conn.signal_subscribe(BUS_NAME, EFFICIENCY, 'ModeChanged', OBJECT_PATH, null,
            Gio.DBusSignalFlags.NONE, (_c, _s, _p, _i, _n, params) => {
                [state.mode, state.effective] = params.deepUnpack();
                view.showModes(null, state.mode);
                render();
            }));
        subscriptions.push(conn.signal_subscribe(BUS_NAME, 'org.freedesktop.DBus.Properties',
            'PropertiesChanged', OBJECT_PATH, null, Gio.DBusSignalFlags.NONE,
            (_c, _s, _p, _i, _n, params) => {
                const [iface, changed] = params.deepUnpack();
                const value = name => changed[name] ? changed[name].deepUnpack() : undefined;
                if (iface === ROUTING && value('LastBackend') !== undefined)
                    state.backend = value('LastBackend');
                if (iface === EFFICIENCY) {
                    state.mode = value('Mode') ?? state.mode;
                    state.effective = value('EffectiveMode') ?? state.effective;
                    view.showModes(null, state.mode);
                }
                render();
            }));
    }

    function unsubscribe() {
        if (connection)
            subscriptions.forEach(id => connection.signal_unsubscribe(id));
        subscriptions = [];
    }

    function appeared(conn) {
        connection = conn;
        subscribe(conn);
        refresh().catch(report);
    }

    function vanished() {
        unsubscribe();
        connection = null;
        state = {mode: '', effective: '', backend: ''};
        view.showAbsent(NOT_RUNNING, ICON_BALANCED);
    }

    return {
        start() {
            view.showAbsent(NOT_RUNNING, ICON_BALANCED);
            watchId = Gio.bus_watch_name(Gio.BusType.SESSION, BUS_NAME, Gio.BusNameWatcherFlags.NONE,
                conn => appeared(conn), () => vanished());
        },
        stop() {
            unsubscribe();
            if (watchId)
                Gio.bus_unwatch_name(watchId);
            watchId = 0;
            connection = null;
        },
        toggle() {
            return this.setMode(state.mode === BALANCED ? lastOther : BALANCED);
        },
        setMode(mode) {
            if (!connection) {
                view.showAbsent(NOT_RUNNING, ICON_BALANCED);
                return Promise.resolve(false);
            }
            return call(connection, EFFICIENCY, 'SetMode', new GLib.Variant('(s)', [mode]), '(b)')
                .then(([ok]) => ok).catch(error => {
                    report(error);
                    return false;
                });
        },
    };
}

return makeController;
