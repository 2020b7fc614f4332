// Runs logic.js against the bus's ie.fio.OllamaProxy with a recording view; prints what the view saw as JSON.
const {Gio, GLib} = imports.gi;
const [, bytes] = GLib.file_get_contents(ARGV[0]);
const makeController = new Function('Gio', 'GLib', imports.byteArray.toString(bytes))(Gio, GLib);
const seen = {absent: [], modes: null, states: []};
const view = {
    showAbsent: text => seen.absent.push(text),
    showModes: (modes, current) => { if (modes) seen.modes = modes; seen.current = current; },
    showState: (text, checked) => seen.states.push([text, checked]),
};
const controller = makeController(view, print);
const loop = new GLib.MainLoop(null, false);
controller.start();
let chosen = false;
GLib.timeout_add(GLib.PRIORITY_DEFAULT, 20, () => {
    if (seen.modes && !chosen) {
        chosen = true;
        controller.setMode('quiet');
    }
    if (seen.current === 'quiet' || seen.tries++ > 200) {
        controller.stop();
        loop.quit();
        return GLib.SOURCE_REMOVE;
    }
    return GLib.SOURCE_CONTINUE;
});
seen.tries = 0;
loop.run();
print(JSON.stringify(seen));
