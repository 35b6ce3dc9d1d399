// Package faultproxy is a fault-injecting UDP proxy for testing wardsync's
// ward ↔ city link, which is QUIC over UDP.
//
// It is used only by tests and chaos scripts; no production code path goes
// through it. It sits between a ward and a city member: the ward dials
// [Proxy.Addr] instead of the member's address, and the proxy forwards each
// datagram to the member and each reply back, applying [Faults] on the way:
//
//   - Drop: each datagram is lost with this probability (each direction).
//   - Duplicate: each datagram is sent twice with this probability.
//   - Reorder: each datagram is held back with this probability and sent
//     right after the next datagram of the same flow, or once ReorderDelay
//     passes with no next datagram.
//   - Delay and Jitter: extra latency, Delay plus a uniform random part in
//     [0, Jitter). With a fixed Delay and no Jitter datagrams keep their order.
//   - Cut: the link is down; everything is dropped both ways, including
//     datagrams already delayed inside the proxy.
//
// Faults are switched while the proxy runs with [Proxy.Set] and [Proxy.Cut];
// a change takes effect for the next datagram. [Proxy.Flap] cuts and restores
// the link on a schedule ("links drop every few hundred ms").
//
// # Flows and NAT
//
// Every client address (a ward) gets its own upstream UDP socket, so the city
// member sees one distinct source address per client, as behind a NAT. A
// client's mapping is forgotten after about two minutes without traffic in
// either direction. A flow is one client in one direction; reordering holds
// back at most one datagram per flow.
//
// # Reproducibility
//
// Random decisions come from math/rand/v2 PCG generators seeded from the
// seed given to [New] (a random one, logged, when it is 0), one generator per
// flow, so the same seed and the same datagrams in the same order give the
// same faults whatever the goroutine scheduling. The seed is logged at INFO.
//
// # Bounds
//
// Datagrams up to 64 KiB are forwarded. At most 10,000 datagrams are held
// inside the proxy (delayed or held back for reordering) at any time; beyond
// that a datagram is dropped and counted as Overflow in [Stats].
package faultproxy
