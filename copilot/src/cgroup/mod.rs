//! cgroup v2: discovery, ids, container ids, cgroup.events, OOM counters.
