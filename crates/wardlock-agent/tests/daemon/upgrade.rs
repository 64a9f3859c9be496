//! A package upgrade under a running session: dpkg replaces the guard's file while the
//! guard runs, and the package restarts wardlockd. The running guard (the old file, still
//! mapped) reconnects to the new service and is accepted; nothing ends the session.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::util::{Daemon, FAST_POLICY};

/// A stand-in guard: perl (always on Debian, root's file) speaking the guard's side of the
/// protocol, reconnecting whenever the connection ends, and saying on its standard output
/// how each `hello` was answered.
const GUARD: &str = r#"
use IO::Socket::UNIX; $| = 1; $SIG{PIPE} = "IGNORE";
my $path = shift;
while (1) {
    my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $path);
    if (!$s) { select(undef, undef, undef, 0.05); next; }
    print $s qq({"type":"hello","version":1,"client":"wardlock 0.0.0-test","role":"guard"}\n);
    my $answer = <$s>;
    if (!defined $answer) { next; }
    my ($type) = $answer =~ /"type":"(\w+)"/; my ($code) = $answer =~ /"code":"(\w+)"/;
    print "hello: ", ($code // $type), "\n";
    while (1) {
        print $s qq({"type":"heartbeat"}\n) or last;
        my $ack = <$s>; last unless defined $ack;
        select(undef, undef, undef, 0.5);
    }
}
"#;

#[test]
fn a_guard_running_while_its_file_is_upgraded_reconnects_to_the_restarted_service() {
    if !crate::util::running_as_root("a guard folder only root may write") {
        return;
    }
    // A folder only root may write, as /usr/bin; the guard installed in it.
    let bin = tempfile::tempdir().unwrap();
    let guard_file = bin.path().join("wardlock");
    std::fs::copy("/usr/bin/perl", &guard_file).unwrap();
    let mut d = Daemon::new(FAST_POLICY).guard_executable(&guard_file);
    d.start();
    let mut guard =
        Command::new(&guard_file).args(["-e", GUARD]).arg(d.socket()).stdout(Stdio::piped()).spawn().unwrap();
    let mut said = BufReader::new(guard.stdout.take().unwrap()).lines();
    assert_eq!(said.next().unwrap().unwrap(), "hello: hello");
    d.wait_for_audit("guard_started", 1);

    // dpkg's way: the new file written beside, renamed over the old one.
    let new = bin.path().join("wardlock.dpkg-new");
    std::fs::copy("/usr/bin/perl", &new).unwrap();
    std::fs::rename(&new, &guard_file).unwrap();
    // The package restarts wardlockd; the old guard, still running, comes back to it.
    d.restart();
    let answer = said.next().unwrap().unwrap();
    assert_eq!(answer, "hello: hello", "the upgraded guard was refused");
    d.wait_for_audit("guard_started", 2);
    // Checked while it still runs: once it is stopped, its loss is rightly escalated.
    let refused: Vec<_> = d
        .audit()
        .into_iter()
        .filter(|e| matches!(e.kind.as_str(), "guard_impostor" | "guard_lost" | "escalation_requested"))
        .collect();
    let _ = guard.kill();
    let _ = guard.wait();
    assert!(refused.is_empty(), "{refused:?}");
}
