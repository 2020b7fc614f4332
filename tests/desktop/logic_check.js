// Runs logic.js against the bus's ie.fio.OllamaProxy with a recording view; prints what the view saw as JSON.
// Steps: choose quiet, then toggle twice (to balanced, back to the last other mode), each once the mode arrived.
const {Gio, GLib} = imports.gi;
const [, bytes] = GLib.file_get_contents(ARGV[0]);
const makeController = new Function('Gio', 'GLib', imports.byteArray.toString(bytes))(Gio, GLib);
const seen = {absent: [], modes: null, states: [], tries: 0};
const view = {
    showAbsent: text => seen.absent.push(text),
    showModes: (modes, current) => {
        if (modes)
            seen.modes = modes;
        seen.current = current;
    },
    showState: (text, checked, icon) => seen.states.push([text, checked, icon]),
};
const controller = makeController(view, print);
const steps = [
    ['balanced', () => controller.setMode('quiet')],
    ['quiet', () => controller.toggle()],
    ['balanced', () => controller.toggle()],
];
const loop = new GLib.MainLoop(null, false);
controller.start();
GLib.timeout_add(GLib.PRIORITY_DEFAULT, 20, () => {
    if (seen.modes && steps.length && seen.current === steps[0][0])
        steps.shift()[1]();
    if ((!steps.length && seen.current === 'quiet') || seen.tries++ > 200) {
        controller.stop();
        loop.quit();
        return GLib.SOURCE_REMOVE;
    }
    return GLib.SOURCE_CONTINUE;
});
loop.run();
print(JSON.stringify(seen));
