package drill

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteTable prints the verification table: one row per replica (its
// digest of the ward at the handback, the state hash cut to 12 hex
// digits), then one row per check.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "Verification of ward %s (every replica, at the handback):\n\n", r.Ward)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPLICA\tROLE\tDOSSIERS\tOPS\tCONFLICTS\tSTATE HASH")
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", row.Replica, row.Role, row.Dossiers, row.Ops, row.Conflicts, short(row.Hash))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RESULT\tCHECK")
	for _, c := range r.Checks {
		if c.OK {
			fmt.Fprintf(tw, "ok\t%s\n", c.Name)
		} else {
			fmt.Fprintf(tw, "MISMATCH\t%s\n\t  %s\n", c.Name, c.Detail)
		}
	}
	return tw.Flush()
}
