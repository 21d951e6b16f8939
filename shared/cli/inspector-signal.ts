// Imported first by each bin, for its side effect alone: a listener for SIGUSR1. A Node process
// with none opens its inspector on 127.0.0.1:9229 at that signal, and any local process, whoever
// runs it, could then run code in this one (root: the provider agent, the host linker). With one,
// Node 20 opens nothing (it has no --disable-sigusr1, Node 22.14 on). Imported first, the listener
// is in place once the bin's modules are loaded, before its command runs; a long-running command
// (spectrum-netd run) says the signal in its log besides.
process.on('SIGUSR1', () => undefined);
