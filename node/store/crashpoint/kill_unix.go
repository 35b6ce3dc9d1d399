//go:build unix

package crashpoint

import (
	"os"
	"syscall"
	"time"
)

func kill() {
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	for { // the signal is on its way; never run on
		time.Sleep(time.Hour)
	}
}
