// Package schema holds wardsync's domain: the procedure catalog, the
// working-day calendar, the dossier workflow, the op (the unit of every
// change), the hybrid logical clock, the deterministic fold of ops into a
// dossier's state, the ward registry, and the binary encoding of ops.
//
// It is pure Go and must never do I/O or import another wardsync package:
// every other layer depends on it, and two replicas that hold the same ops
// must compute byte-identical state from it.
package schema
