//! The BPF syscalls the kernel-cost figures need, without a BPF library:
//! run-time statistics (`BPF_ENABLE_STATS`), program info by id, copilot's programs
//! found through `/proc/PID/fdinfo`, and two reference programs (an empty one and one
//! that only reads and compares the cgroup id) attached to the same tracepoints.
use std::{
    collections::BTreeMap,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, bail};

const BPF_PROG_LOAD: i64 = 5;
const BPF_OBJ_GET: i64 = 7;
const BPF_PROG_GET_FD_BY_ID: i64 = 13;
const BPF_MAP_GET_FD_BY_ID: i64 = 14;
const BPF_OBJ_GET_INFO_BY_FD: i64 = 15;
const BPF_ENABLE_STATS: i64 = 32;
const BPF_RAW_TRACEPOINT_OPEN: i64 = 17;
const BPF_PROG_TEST_RUN: i64 = 10;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// Raw tracepoints, as copilot's own programs are.
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const BPF_FUNC_GET_CURRENT_ANCESTOR_CGROUP_ID: i32 = 123;
/// `sizeof(struct bpf_prog_info)` and the offsets used, from `linux/bpf.h` (6.x).
const PROG_INFO_LEN: usize = 232;
const PROG_INFO_NR_MAP_IDS: usize = 52;
const PROG_INFO_MAP_IDS: usize = 56;
const PROG_INFO_RUN_TIME_NS: usize = 192;
const PROG_INFO_RUN_CNT: usize = 200;
const MAP_INFO_LEN: usize = 88;
const MAP_INFO_NAME: usize = 24;

fn sys_bpf(cmd: i64, attr: &mut [u8]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a buffer of the given length, laid out as `union bpf_attr` wants.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(buf: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes"))
}

fn get_u64(buf: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(buf[off..off + 8].try_into().expect("8 bytes"))
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: a new fd returned by the kernel, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// `BPF_ENABLE_STATS(BPF_STATS_RUN_TIME)`: run_time_ns/run_cnt are counted while this
/// lives (the same switch as `kernel.bpf_stats_enabled=1`, released if we crash).
pub struct StatsEnabled(#[expect(dead_code, reason = "held for its Drop")] OwnedFd);

pub fn enable_stats() -> anyhow::Result<StatsEnabled> {
    let mut attr = [0u8; 8];
    let fd = sys_bpf(BPF_ENABLE_STATS, &mut attr).context("BPF_ENABLE_STATS (needs root)")?;
    Ok(StatsEnabled(owned(fd)))
}

/// Cumulative run statistics of one program.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

impl Stats {
    pub fn since(self, before: Stats) -> Stats {
        Stats {
            run_time_ns: self.run_time_ns.saturating_sub(before.run_time_ns),
            run_cnt: self.run_cnt.saturating_sub(before.run_cnt),
        }
    }

    pub fn add(self, other: Stats) -> Stats {
        Stats {
            run_time_ns: self.run_time_ns + other.run_time_ns,
            run_cnt: self.run_cnt + other.run_cnt,
        }
    }

    pub fn mean_ns(self) -> f64 {
        if self.run_cnt == 0 {
            0.0
        } else {
            self.run_time_ns as f64 / self.run_cnt as f64
        }
    }
}

fn info(fd: &OwnedFd, out: &mut [u8]) -> anyhow::Result<()> {
    let mut attr = [0u8; 16];
    put_u32(&mut attr, 0, fd.as_raw_fd() as u32);
    put_u32(&mut attr, 4, out.len() as u32);
    put_u64(&mut attr, 8, out.as_mut_ptr() as u64);
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("BPF_OBJ_GET_INFO_BY_FD")?;
    Ok(())
}

fn prog_fd(id: u32) -> anyhow::Result<OwnedFd> {
    let mut attr = [0u8; 12];
    put_u32(&mut attr, 0, id);
    Ok(owned(
        sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)
            .with_context(|| format!("BPF_PROG_GET_FD_BY_ID {id}"))?,
    ))
}

fn prog_stats_fd(fd: &OwnedFd) -> anyhow::Result<Stats> {
    let mut buf = vec![0u8; PROG_INFO_LEN];
    info(fd, &mut buf)?;
    Ok(Stats {
        run_time_ns: get_u64(&buf, PROG_INFO_RUN_TIME_NS),
        run_cnt: get_u64(&buf, PROG_INFO_RUN_CNT),
    })
}

/// Names of the maps a program uses.
fn prog_map_names(fd: &OwnedFd) -> anyhow::Result<Vec<String>> {
    let mut ids = [0u32; 16];
    let mut buf = vec![0u8; PROG_INFO_LEN];
    put_u32(&mut buf, PROG_INFO_NR_MAP_IDS, ids.len() as u32);
    put_u64(&mut buf, PROG_INFO_MAP_IDS, ids.as_mut_ptr() as u64);
    info(fd, &mut buf)?;
    let n = (get_u32(&buf, PROG_INFO_NR_MAP_IDS) as usize).min(ids.len());
    let mut names = Vec::new();
    for &id in &ids[..n] {
        let mut attr = [0u8; 12];
        put_u32(&mut attr, 0, id);
        let mfd = owned(sys_bpf(BPF_MAP_GET_FD_BY_ID, &mut attr).context("BPF_MAP_GET_FD_BY_ID")?);
        let mut minfo = vec![0u8; MAP_INFO_LEN];
        info(&mfd, &mut minfo)?;
        names.push(c_name(&minfo[MAP_INFO_NAME..MAP_INFO_NAME + 16]));
    }
    Ok(names)
}

fn c_name(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// One of copilot's programs, found in a process's fd table or the node set's links.
pub struct Prog {
    pub id: u32,
    /// `exec`, `exit` or `oom`: told apart by their maps (program names are cut
    /// to 15 characters, `sched_process_e` for both sched programs).
    pub role: &'static str,
    fd: OwnedFd,
}

impl Prog {
    pub fn stats(&self) -> anyhow::Result<Stats> {
        prog_stats_fd(&self.fd)
    }
}

/// `BPF_OBJ_GET`: opens a pinned object.
fn obj_get(path: &std::path::Path) -> anyhow::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).context("path with a NUL")?;
    let mut attr = [0u8; 16];
    put_u64(&mut attr, 0, c.as_ptr() as u64);
    let fd = sys_bpf(BPF_OBJ_GET, &mut attr)
        .with_context(|| format!("BPF_OBJ_GET {}", path.display()))?;
    Ok(owned(fd))
}

/// Ids of the programs the pinned links (`link_*`) of a node set hold.
fn linked_programs(set_dir: &std::path::Path) -> anyhow::Result<Vec<u32>> {
    let mut ids = Vec::new();
    for entry in
        std::fs::read_dir(set_dir).with_context(|| format!("reading {}", set_dir.display()))?
    {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with("link_") {
            continue;
        }
        let fd = obj_get(&entry.path())?;
        // struct bpf_link_info { __u32 type; __u32 id; __u32 prog_id; … }
        let mut buf = vec![0u8; 64];
        info(&fd, &mut buf)?;
        ids.push(get_u32(&buf, 8));
    }
    Ok(ids)
}

/// The tracer's programs: those the process `pid` holds open (a private set), else
/// those the pinned links of its node set `set_dir` hold.
pub fn programs_of(pid: u32, set_dir: Option<&std::path::Path>) -> anyhow::Result<Vec<Prog>> {
    let mut ids = Vec::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        if let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    if ids.is_empty()
        && let Some(dir) = set_dir
    {
        ids = linked_programs(dir)?;
    }
    let mut progs = Vec::new();
    for id in ids {
        let fd = prog_fd(id)?;
        let maps = prog_map_names(&fd)?;
        let role = if maps.iter().any(|m| m == "CONTAINERS") {
            "exec"
        } else if maps.iter().any(|m| m == "MAINS") {
            "exit"
        } else {
            "oom"
        };
        progs.push(Prog { id, role, fd });
    }
    let roles: Vec<_> = progs.iter().map(|p| p.role).collect();
    if !roles.contains(&"exec") || !roles.contains(&"exit") {
        bail!("process {pid} holds BPF programs {roles:?}: copilot's exec/exit programs not found");
    }
    Ok(progs)
}

/// Sums the stats of `progs` by role.
pub fn stats_by_role(progs: &[Prog]) -> anyhow::Result<BTreeMap<&'static str, Stats>> {
    let mut m: BTreeMap<&'static str, Stats> = BTreeMap::new();
    for p in progs {
        let s = p.stats()?;
        let e = m.entry(p.role).or_default();
        *e = e.add(s);
    }
    Ok(m)
}

/// A reference program attached to `sched_process_exec` and `sched_process_exit`.
pub struct RefProg {
    prog: OwnedFd,
    _links: Vec<OwnedFd>,
}

impl RefProg {
    /// `r0 = 0; exit`: what any attached tracepoint program costs at least.
    pub fn empty() -> anyhow::Result<Self> {
        let insns = [insn(0xb7, 0, 0, 0, 0), insn(0x95, 0, 0, 0, 0)];
        Self::load("ref_empty", &insns)
    }

    /// copilot's pod filter alone: `bpf_get_current_ancestor_cgroup_id(level) == pod_id`.
    pub fn cgroup_filter(level: u32, pod_id: u64) -> anyhow::Result<Self> {
        let insns = [
            insn(0xb7, 1, 0, 0, level as i32), // r1 = level
            insn(0x85, 0, 0, 0, BPF_FUNC_GET_CURRENT_ANCESTOR_CGROUP_ID), // call
            insn(0x18, 1, 0, 0, pod_id as u32 as i32), // r1 = pod_id (lo)
            insn(0x00, 0, 0, 0, (pod_id >> 32) as u32 as i32), // (hi)
            insn(0x5d, 0, 1, 1, 0),            // if r0 != r1 goto +1
            insn(0xb7, 0, 0, 0, 1),            // r0 = 1
            insn(0xb7, 0, 0, 0, 0),            // r0 = 0
            insn(0x95, 0, 0, 0, 0),            // exit
        ];
        Self::load("ref_cgroup_id", &insns)
    }

    /// The same check with the level and pod id read from a frozen read-only array
    /// map, as copilot reads its `CONFIG` from `.rodata` (volatile loads, so the
    /// values are not folded into the instructions).
    pub fn cgroup_filter_rodata(level: u32, pod_id: u64) -> anyhow::Result<(Self, OwnedFd)> {
        let map = rodata(level, pod_id)?;
        let mut p = Asm::default();
        p.push(insn(0x18, 6, 2, 0, map.as_raw_fd())); // r6 = &value (BPF_PSEUDO_MAP_VALUE)
        p.push(insn(0x00, 0, 0, 0, 0)); // offset 0
        p.push(insn(0x61, 1, 6, 0, 0)); // r1 = *(u32 *)(r6 + 0)
        p.push(insn(0x85, 0, 0, 0, BPF_FUNC_GET_CURRENT_ANCESTOR_CGROUP_ID));
        p.jump_to_exit(insn(0x15, 0, 0, 0, 0)); // if r0 == 0 goto exit
        p.push(insn(0x79, 1, 6, 8, 0)); // r1 = *(u64 *)(r6 + 8)
        p.jump_to_exit(insn(0x5d, 0, 1, 0, 0)); // if r0 != r1 goto exit
        p.push(insn(0xb7, 0, 0, 0, 1)); // in the pod
        let insns = p.finish();
        Ok((Self::load("ref_cgroup_ro", &insns)?, map))
    }

    /// The pod check, then what every in-pod event of copilot's costs at least: a
    /// 336-byte ring-buffer record reserved and submitted without a wake-up. With
    /// `fill`, also what copilot writes into it: the record zeroed, boottime, pid/tgid,
    /// cgroup id, comm, the current task and two kernel reads (the parent's tgid).
    /// Nobody consumes this ring: it is sized to hold every record of the run.
    pub fn submit(level: u32, pod_id: u64, ring: &Ring, fill: bool) -> anyhow::Result<Self> {
        const RECORD: i32 = 336;
        let mut p = Asm::default();
        p.push(insn(0xb7, 1, 0, 0, level as i32));
        p.push(insn(0x85, 0, 0, 0, BPF_FUNC_GET_CURRENT_ANCESTOR_CGROUP_ID));
        p.push(insn(0x18, 1, 0, 0, pod_id as u32 as i32));
        p.push(insn(0x00, 0, 0, 0, (pod_id >> 32) as u32 as i32));
        p.jump_to_exit(insn(0x5d, 0, 1, 0, 0)); // if r0 != r1 goto exit
        p.push(insn(0x18, 1, 1, 0, ring.fd.as_raw_fd())); // r1 = &ring (BPF_PSEUDO_MAP_FD)
        p.push(insn(0x00, 0, 0, 0, 0));
        p.push(insn(0xb7, 2, 0, 0, RECORD));
        p.push(insn(0xb7, 3, 0, 0, 0));
        p.push(insn(0x85, 0, 0, 0, 131)); // bpf_ringbuf_reserve
        p.jump_to_exit(insn(0x15, 0, 0, 0, 0)); // if r0 == 0 goto exit
        p.push(insn(0xbf, 6, 0, 0, 0)); // r6 = record
        if fill {
            for i in 0..(RECORD / 8) {
                p.push(insn(0x7a, 6, 0, (i * 8) as i16, 0)); // *(u64 *)(r6 + 8i) = 0
            }
            for (helper, off) in [(125, 0i16), (14, 8), (80, 16)] {
                p.push(insn(0x85, 0, 0, 0, helper)); // ktime_get_boot_ns, pid_tgid, cgroup id
                p.push(insn(0x7b, 6, 0, off, 0)); // *(u64 *)(r6 + off) = r0
            }
            p.push(insn(0xbf, 1, 6, 0, 0)); // r1 = r6 + 24
            p.push(insn(0x07, 1, 0, 0, 24));
            p.push(insn(0xb7, 2, 0, 0, 16));
            p.push(insn(0x85, 0, 0, 0, 16)); // bpf_get_current_comm
            p.push(insn(0x85, 0, 0, 0, 35)); // bpf_get_current_task
            p.push(insn(0xbf, 7, 0, 0, 0)); // r7 = task
            for off in [40, 48] {
                p.push(insn(0xbf, 1, 6, 0, 0)); // r1 = r6 + off
                p.push(insn(0x07, 1, 0, 0, off));
                p.push(insn(0xb7, 2, 0, 0, 8));
                p.push(insn(0xbf, 3, 7, 0, 0)); // r3 = task + off
                p.push(insn(0x07, 3, 0, 0, off));
                p.push(insn(0x85, 0, 0, 0, 113)); // bpf_probe_read_kernel
            }
        }
        p.push(insn(0xbf, 1, 6, 0, 0));
        p.push(insn(0xb7, 2, 0, 0, 1)); // BPF_RB_NO_WAKEUP
        p.push(insn(0x85, 0, 0, 0, 132)); // bpf_ringbuf_submit
        let insns = p.finish();
        Self::load(if fill { "ref_event" } else { "ref_submit" }, &insns)
    }

    fn load(name: &'static str, insns: &[u64]) -> anyhow::Result<Self> {
        let prog = load_prog(BPF_PROG_TYPE_RAW_TRACEPOINT, name, insns)?;
        let mut links = Vec::new();
        for tp in ["sched_process_exec", "sched_process_exit"] {
            links.push(attach(&prog, tp).with_context(|| format!("attaching {name}"))?);
        }
        Ok(Self {
            prog,
            _links: links,
        })
    }

    pub fn stats(&self) -> anyhow::Result<Stats> {
        prog_stats_fd(&self.prog)
    }
}

/// Loads `insns` as a program of `prog_type`; on failure, loads again with the
/// verifier's log, to say why.
fn load_prog(prog_type: u32, name: &'static str, insns: &[u64]) -> anyhow::Result<OwnedFd> {
    let license = b"GPL\0";
    let load = |log: &mut [u8]| {
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, prog_type);
        put_u32(&mut attr, 4, insns.len() as u32);
        put_u64(&mut attr, 8, insns.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        if !log.is_empty() {
            put_u32(&mut attr, 24, 1);
            put_u32(&mut attr, 28, log.len() as u32);
            put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
        }
        let pname = name.as_bytes();
        let n = pname.len().min(15);
        attr[48..48 + n].copy_from_slice(&pname[..n]);
        sys_bpf(BPF_PROG_LOAD, &mut attr)
    };
    match load(&mut []) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => {
            let mut log = vec![0u8; 1 << 20];
            let _ = load(&mut log);
            bail!("loading {name}: {e}\n{}", c_name(&log));
        }
    }
}

/// An empty socket filter, run by `BPF_PROG_TEST_RUN` in a loop inside the kernel:
/// the same `bpf_prog_run` as a tracepoint's, with or without the statistics.
pub struct TestRun {
    prog: OwnedFd,
}

impl TestRun {
    pub fn empty() -> anyhow::Result<Self> {
        let insns = [insn(0xb7, 0, 0, 0, 0), insn(0x95, 0, 0, 0, 0)];
        Ok(Self {
            prog: load_prog(BPF_PROG_TYPE_SOCKET_FILTER, "ref_test_run", &insns)?,
        })
    }

    /// Runs the program `repeat` times on a 64-byte packet; the kernel's mean ns a
    /// run (its timer is read around batches of runs, not each one).
    pub fn mean_ns(&self, repeat: u32) -> anyhow::Result<u32> {
        let packet = [0u8; 64];
        let mut attr = [0u8; 80];
        put_u32(&mut attr, 0, self.prog.as_raw_fd() as u32);
        put_u32(&mut attr, 8, packet.len() as u32);
        put_u64(&mut attr, 16, packet.as_ptr() as u64);
        put_u32(&mut attr, 32, repeat);
        sys_bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN")?;
        Ok(get_u32(&attr, 36))
    }

    pub fn stats(&self) -> anyhow::Result<Stats> {
        prog_stats_fd(&self.prog)
    }
}

/// A program under construction whose forward jumps all go to a final `r0 = 0; exit`.
#[derive(Default)]
struct Asm {
    insns: Vec<u64>,
    exits: Vec<usize>,
}

impl Asm {
    fn push(&mut self, i: u64) {
        self.insns.push(i);
    }

    fn jump_to_exit(&mut self, i: u64) {
        self.exits.push(self.insns.len());
        self.insns.push(i);
    }

    fn finish(mut self) -> Vec<u64> {
        let exit = self.insns.len();
        for at in self.exits {
            let off = (exit - at - 1) as u16;
            self.insns[at] = (self.insns[at] & !(0xffff << 16)) | (u64::from(off) << 16);
        }
        self.insns.push(insn(0xb7, 0, 0, 0, 0));
        self.insns.push(insn(0x95, 0, 0, 0, 0));
        self.insns
    }
}

/// A frozen, program-read-only array map holding `{level: u32, _pad: u32, pod_id: u64}`.
fn rodata(level: u32, pod_id: u64) -> anyhow::Result<OwnedFd> {
    const BPF_MAP_CREATE: i64 = 0;
    const BPF_MAP_UPDATE_ELEM: i64 = 2;
    const BPF_MAP_FREEZE: i64 = 22;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    const BPF_F_RDONLY_PROG: u32 = 1 << 7;
    let mut attr = [0u8; 72];
    put_u32(&mut attr, 0, BPF_MAP_TYPE_ARRAY);
    put_u32(&mut attr, 4, 4);
    put_u32(&mut attr, 8, 16);
    put_u32(&mut attr, 12, 1);
    put_u32(&mut attr, 16, BPF_F_RDONLY_PROG);
    let map = owned(sys_bpf(BPF_MAP_CREATE, &mut attr).context("BPF_MAP_CREATE array")?);
    let key = 0u32;
    let mut value = [0u8; 16];
    put_u32(&mut value, 0, level);
    put_u64(&mut value, 8, pod_id);
    let mut attr = [0u8; 32];
    put_u32(&mut attr, 0, map.as_raw_fd() as u32);
    put_u64(&mut attr, 8, &raw const key as u64);
    put_u64(&mut attr, 16, value.as_ptr() as u64);
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).context("BPF_MAP_UPDATE_ELEM")?;
    let mut attr = [0u8; 8];
    put_u32(&mut attr, 0, map.as_raw_fd() as u32);
    sys_bpf(BPF_MAP_FREEZE, &mut attr).context("BPF_MAP_FREEZE")?;
    Ok(map)
}

/// A BPF ring buffer map (for the reference programs).
pub struct Ring {
    fd: OwnedFd,
}

impl Ring {
    pub fn new(bytes: u32) -> anyhow::Result<Self> {
        const BPF_MAP_CREATE: i64 = 0;
        const BPF_MAP_TYPE_RINGBUF: u32 = 27;
        let mut attr = [0u8; 72];
        put_u32(&mut attr, 0, BPF_MAP_TYPE_RINGBUF);
        put_u32(&mut attr, 12, bytes.next_power_of_two());
        let fd = sys_bpf(BPF_MAP_CREATE, &mut attr).context("BPF_MAP_CREATE ringbuf")?;
        Ok(Self { fd: owned(fd) })
    }
}

/// One `struct bpf_insn` as a u64 (little-endian layout).
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst & 0xf) << 8)
        | (u64::from(src & 0xf) << 12)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

/// `BPF_RAW_TRACEPOINT_OPEN` by tracepoint name (as aya attaches copilot's programs):
/// the returned fd keeps the program attached.
fn attach(prog: &OwnedFd, name: &str) -> anyhow::Result<OwnedFd> {
    let name_c = std::ffi::CString::new(name).context("tracepoint name")?;
    let mut attr = [0u8; 16];
    put_u64(&mut attr, 0, name_c.as_ptr() as u64);
    put_u32(&mut attr, 8, prog.as_raw_fd() as u32);
    let fd = sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)
        .with_context(|| format!("BPF_RAW_TRACEPOINT_OPEN {name}"))?;
    Ok(owned(fd))
}
