//! The panic hook that lets redb's caught panics unwind under libFuzzer.

use std::sync::Once;

/// Under libFuzzer every panic aborts the process, even one that would be caught. The engine
/// deliberately catches the panics redb raises on some damaged index files (it rebuilds the
/// index instead), so this hook lets panics raised inside redb unwind as usual and passes every
/// other panic to the hook installed before (libFuzzer's, which aborts). Call it from each
/// fuzz target; only the first call installs the hook.
pub fn contain_redb_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_redb = info.location().is_some_and(|l| {
                let file = l.file().replace('\\', "/");
                file.contains("/redb-") || file.starts_with("redb-")
            });
            if in_redb {
                // Say so: if the engine does not contain it, the thread dies with this panic.
                eprintln!("redb panicked (let unwind): {info}");
            } else {
                previous(info);
            }
        }));
    });
}
