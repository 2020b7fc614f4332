/* exported init */
// Test-only, never shipped: gnome-shell has no flag for unsafe mode, and without it Eval answers (false, '')
// and Screenshot refuses callers that do not own an allow-listed bus name.
'use strict';

function init() {
    return {
        enable() {
            global.context.unsafe_mode = true;
        },
        disable() {
            global.context.unsafe_mode = false;
        },
    };
}
