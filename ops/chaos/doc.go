// Package chaos attacks a whole wardsync city with randomized faults and
// checks that nothing acknowledged was lost: the chaos driver of issue 7,
// run by scripts/chaos (docs/reliability.md).
//
// [Run] starts real processes on 127.0.0.1 with the given binary: 3 city
// members (c1..c3, Raft timeouts of 400 ms), 4 ward offices (w1..w4 for
// HCM001..HCM004) and a backup office (bk, whose backup certificate names
// HCM001 and HCM002). Every office reaches every member through its own
// replication/faultproxy; every member reaches the others through a mesh
// proxy in front of it (the member advertises the proxy's address), which
// drops datagrams by directed member pair. One ward's and one member's
// data dir is a small ext4 disk of its own, an image on a loop device (when
// the driver is root).
//
// Clients keep writing: at each ward office a clerk and a head create
// dossiers, move them through the workflow, add notes, attach small PDFs
// and (heads) resolve conflicts; at the backup office a head per ward works
// whenever it holds the ward; a portal client submits dossiers for every
// ward at random members. Every write carries a tag unique in the run, and
// its outcome is recorded: acknowledged (2xx), refused (4xx, or the
// connection refused), failed (503: "nothing was saved") or unknown (no
// answer).
//
// Meanwhile a schedule drawn from the seed ([makeSchedule]) injects a
// fault every 0.5–3 s, each held for a short time and then healed:
// partitions of an office from the city (whole, partial, lossy), of the
// city (a minority, no majority at all, a bridge), one-way cuts between
// members, SIGKILL and restart of any process (the leader a third of the
// time), SIGSTOP longer than the election timeout, clock skew and jumps
// (an office restarted with the hidden `--clock-offset`), a full disk on a
// ward and on a member (a filler file on their small disk), failovers and
// handbacks of HCM001 and HCM002 (plain or forced), split brains (the
// office cut off while its ward fails over), and member replacement
// (removed through the API; a new member with an empty data dir joins).
//
// After the fault phase everything heals: cuts removed, processes resumed
// and restarted, a pending handback waited out. Then the checker:
//
//   - each ward's replicas (its office's node, every member, and the backup
//     office if it holds the ward) reach the same digest within
//     Config.Timeout;
//   - on every replica, every acknowledged dossier is there with its
//     receipt number, and every acknowledged op is in its history; no
//     refused or failed write is there; no op ID and no write's tag appears
//     twice; no dossier is there that no client asked for;
//   - no receipt number appears twice, on a replica or city-wide;
//   - the lease history (reads, failovers, handbacks, with call and return
//     times; unknown outcomes allowed) is linearizable against the lease's
//     sequential model, checked by porcupine, and the city's own lease
//     history has an epoch for each change that won, and no other;
//   - writes acknowledged while a disk was full are checked like any other
//     (and named when missing); a process that exits by itself is a
//     violation unless its disk was full.
//
// Every violation is recorded in the [Summary] with the command that runs
// the same schedule again ([ReplayCommand]).
package chaos
