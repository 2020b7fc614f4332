// Loads the ES module named in ARGV (gjs -m): exits 1 on a SyntaxError, which shows before any import resolves.
// Shell 45+'s own modules (resource:///org/gnome/shell/...) do not exist outside the shell, so their ImportError
// is the expected end of a module that parsed.
import System from 'system';

try {
    await import(`file://${System.programArgs[0]}`);
} catch (error) {
    print(`${error.name}: ${error.message}`);
    System.exit(error instanceof SyntaxError ? 1 : 0);
}
