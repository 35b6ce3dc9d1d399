package cluster

import "github.com/hashicorp/raft"

// WrapLogs sets the wrapper of the log store Raft writes to, for tests in
// cluster_test that make a member's appends fail.
func WrapLogs(cfg *Config, w func(raft.LogStore) raft.LogStore) { cfg.wrapLogs = w }
