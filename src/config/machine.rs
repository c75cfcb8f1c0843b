//! The memory of the machine the broker runs on, from which the default budget is derived: the
//! smaller of `MemTotal` (/proc/meminfo) and the cgroup limit of the process (v2 `memory.max`
//! when it is not "max", v1 `memory.limit_in_bytes`, whose "no limit" is a number larger than
//! any machine's memory). A budget that, times the shards, exceeds it protects nothing: the
//! machine runs out before the limits are reached.

use super::budget::human;

/// What bounds the process's memory, and where that bound comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineMemory {
    pub bytes: u64,
    pub source: &'static str,
}

/// `MemTotal` from the text of /proc/meminfo.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A cgroup v2 `memory.max`: `None` for "max" (no limit) or anything unreadable.
pub fn parse_cgroup_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The cgroup v2 directory of this process, from the text of /proc/self/cgroup ("0::/path").
fn cgroup_path(text: &str) -> Option<&str> {
    text.lines().find_map(|line| line.strip_prefix("0::"))
}

/// The cgroup v1 memory controller's directory of this process ("N:memory:/path", or a line
/// naming several controllers, "N:cpu,memory:/path").
fn cgroup_v1_memory_path(text: &str) -> Option<&str> {
    text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    })
}

/// The smaller of the two bounds; `None` when neither can be read (not Linux, no /proc).
pub fn of(meminfo: Option<u64>, cgroup: Option<u64>) -> Option<MachineMemory> {
    match (meminfo, cgroup) {
        (Some(total), Some(limit)) if limit < total => Some(MachineMemory {
            bytes: limit,
            source: "cgroup memory.max",
        }),
        (Some(total), _) => Some(MachineMemory {
            bytes: total,
            source: "MemTotal",
        }),
        (None, Some(limit)) => Some(MachineMemory {
            bytes: limit,
            source: "cgroup memory.max",
        }),
        (None, None) => None,
    }
}

/// This machine's memory bound, read from /proc and /sys/fs/cgroup.
pub fn detect() -> Option<MachineMemory> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_meminfo(&text));
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let read = |file: String| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|text| parse_cgroup_max(&text))
    };
    let v2 = cgroup_path(&cgroups).and_then(|path| {
        read(format!(
            "/sys/fs/cgroup{}/memory.max",
            path.trim_end_matches('/')
        ))
    });
    let v1 = cgroup_v1_memory_path(&cgroups).and_then(|path| {
        read(format!(
            "/sys/fs/cgroup/memory{}/memory.limit_in_bytes",
            path.trim_end_matches('/')
        ))
    });
    of(meminfo, v2.or(v1))
}

/// The line for the start-up summary: the budget of all shards against the machine, with a
/// warning when it exceeds it.
pub fn summary(budget_bytes: u64, shards: usize, machine: Option<&MachineMemory>) -> String {
    let all = budget_bytes.saturating_mul(shards as u64);
    let Some(machine) = machine else {
        return format!(
            "memory budget of all shards: {} (this machine's memory is unknown)",
            human(all)
        );
    };
    let fits = if all <= machine.bytes {
        String::from("within it")
    } else {
        format!(
            "MORE than the machine has: the limits cannot keep the broker within its memory; \
             set limits.memory_budget_bytes to at most {} ({} / {shards} shards) and lower \
             limits until ringmq check-config passes",
            machine.bytes / shards.max(1) as u64,
            human(machine.bytes)
        )
    };
    format!(
        "memory budget of all shards: {} against {} of {}: {fits}",
        human(all),
        human(machine.bytes),
        machine.source
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo_and_cgroup_limits() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some(24_576_000 * 1024));
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
        assert_eq!(parse_cgroup_max("max\n"), None);
        assert_eq!(parse_cgroup_max("4294967296\n"), Some(4 << 30));
        assert_eq!(
            cgroup_path("0::/system.slice/ringmq.service\n"),
            Some("/system.slice/ringmq.service")
        );
        let v1 = "12:cpu,cpuacct:/a\n4:memory:/docker/abc\n0::/\n";
        assert_eq!(cgroup_v1_memory_path(v1), Some("/docker/abc"));
        assert_eq!(cgroup_v1_memory_path("0::/\n"), None);
        // v1's "no limit" is larger than the machine: MemTotal wins.
        let unlimited = parse_cgroup_max("9223372036854771712\n");
        assert_eq!(
            of(Some(24 << 30), unlimited).map(|m| m.source),
            Some("MemTotal")
        );
        // The smaller bound wins, and says where it came from.
        let cgroup = of(Some(24 << 30), Some(4 << 30));
        assert_eq!(
            cgroup.map(|m| (m.bytes, m.source)),
            Some((4 << 30, "cgroup memory.max"))
        );
        let total = of(Some(24 << 30), None);
        assert_eq!(total.map(|m| m.source), Some("MemTotal"));
        assert_eq!(of(None, None), None);
    }

    #[test]
    fn a_budget_over_the_machine_is_called_out() {
        let machine = MachineMemory {
            bytes: 24 << 30,
            source: "MemTotal",
        };
        let over = summary(256 << 30, 2, Some(&machine));
        assert!(over.contains("MORE than the machine has"), "{over}");
        assert!(over.contains("at most 12884901888"), "{over}");
        let within = summary(8 << 30, 2, Some(&machine));
        assert!(within.ends_with("within it"), "{within}");
    }
}
