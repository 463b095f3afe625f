//! What a lab guest is: its size, its workloads and how often it reports its own view.
//!
//! A [`GuestSpec`] is built with chained setters or parsed from the command-line form
//! `NAME[:ITEM,ITEM...]` (see [`GuestSpec::from_str`](std::str::FromStr)). [`GuestSpec::validate`]
//! checks it; the initramfs carries it to the guest as two small files (see [`GuestSpec::lab_conf`]).
//! The kernel it boots is the lab's choice ([`KernelPin::selected`]) unless the spec names one.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::kernel::KernelPin;
use crate::LabError;

/// Names a workload may not take: the comms of the lab's own guest processes.
const RESERVED_COMMS: &[&str] = &["init", "start", "view", "control", "sleep", "sh", "workload"];

/// What a workload process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    /// Spins forever (always runnable).
    Cpu,
    /// Spins for `busy_ms`, sleeps for `idle_ms`, repeated (10 ms resolution).
    Phases {
        /// Milliseconds of spinning per period.
        busy_ms: u32,
        /// Milliseconds of sleep per period.
        idle_ms: u32,
    },
    /// Sleeps forever (never runnable).
    Sleep,
    /// Starts idle (sleeping), then spins or sleeps as the host says with
    /// [`Guest::steer`](crate::Guest::steer).
    Steered,
}

impl WorkloadKind {
    /// The kind word the guest's `/lab/workload` script takes.
    fn word(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Phases { .. } => "phases",
            Self::Sleep => "sleep",
            Self::Steered => "steered",
        }
    }
}

/// A group of identical workload processes in a guest, all with the same `comm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// The process name (`comm`): 1–15 of `[A-Za-z0-9_-]`.
    pub name: String,
    /// What each process does.
    pub kind: WorkloadKind,
    /// How many processes (at least 1).
    pub count: u32,
    /// The cgroup v2 group (relative to `/sys/fs/cgroup`, `/`-separated) the processes start in;
    /// `None` is the root group.
    pub cgroup: Option<String>,
}

impl Workload {
    /// One process spinning forever.
    pub fn cpu(name: &str) -> Self {
        Self::new(name, WorkloadKind::Cpu)
    }

    /// One process alternating `busy_ms` of spinning and `idle_ms` of sleep.
    pub fn phases(name: &str, busy_ms: u32, idle_ms: u32) -> Self {
        Self::new(name, WorkloadKind::Phases { busy_ms, idle_ms })
    }

    /// One process sleeping forever.
    pub fn sleep(name: &str) -> Self {
        Self::new(name, WorkloadKind::Sleep)
    }

    /// One process that starts idle and is made busy or idle by [`Guest::steer`](crate::Guest::steer).
    pub fn steered(name: &str) -> Self {
        Self::new(name, WorkloadKind::Steered)
    }

    /// A workload of `kind` called `name`.
    pub fn new(name: &str, kind: WorkloadKind) -> Self {
        Self { name: name.to_owned(), kind, count: 1, cgroup: None }
    }

    /// Runs `count` copies instead of one.
    pub fn count(mut self, count: u32) -> Self {
        self.count = count;
        self
    }

    /// Starts the processes in cgroup `group` (created with the cpu controller enabled above it).
    pub fn in_cgroup(mut self, group: &str) -> Self {
        self.cgroup = Some(group.to_owned());
        self
    }

    fn check(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty() || name.len() > 15 || !name.bytes().all(is_name_byte) {
            return Err(format!("workload name {name:?}: want 1-15 of [A-Za-z0-9_-]"));
        }
        if RESERVED_COMMS.contains(&name.as_str()) {
            return Err(format!("workload name {name:?} is reserved for the lab's own processes"));
        }
        if self.count == 0 {
            return Err(format!("workload {name}: count must be at least 1"));
        }
        if let Some(group) = &self.cgroup {
            validate_cgroup(group).map_err(|e| format!("workload {name}: {e}"))?;
        }
        Ok(())
    }

    /// The arguments of the guest's `/lab/spawn`: `NAME KIND COUNT CGROUP BUSY_MS IDLE_MS`.
    pub(crate) fn spawn_args(&self) -> String {
        let (busy, idle) = match self.kind {
            WorkloadKind::Phases { busy_ms, idle_ms } => (busy_ms, idle_ms),
            WorkloadKind::Cpu | WorkloadKind::Sleep | WorkloadKind::Steered => (0, 0),
        };
        let group = self.cgroup.as_deref().unwrap_or("-");
        format!("{} {} {} {group} {busy} {idle}", self.name, self.kind.word(), self.count)
    }

    /// Checks the name, count and cgroup (see the field docs).
    pub fn validate(&self) -> Result<(), String> {
        self.check()
    }
}

impl fmt::Display for Workload {
    /// The command-line form: `NAME=KIND[:BUSY:IDLE][*COUNT][@CGROUP]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.kind.word())?;
        if let WorkloadKind::Phases { busy_ms, idle_ms } = self.kind {
            write!(f, ":{busy_ms}:{idle_ms}")?;
        }
        if self.count != 1 {
            write!(f, "*{}", self.count)?;
        }
        if let Some(group) = &self.cgroup {
            write!(f, "@{group}")?;
        }
        Ok(())
    }
}

/// Checks a cgroup path relative to `/sys/fs/cgroup`: `[A-Za-z0-9_-]+` parts joined by `/`.
pub fn validate_cgroup(group: &str) -> Result<(), String> {
    let ok = !group.is_empty() && group.split('/').all(|part| !part.is_empty() && part.bytes().all(is_name_byte));
    if ok {
        Ok(())
    } else {
        Err(format!("cgroup {group:?}: want [A-Za-z0-9_-]+ parts joined by '/'"))
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Everything needed to boot one lab guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestSpec {
    /// The guest's name (its hostname, and the label in messages): 1–32 of `[A-Za-z0-9_-]`.
    pub name: String,
    /// The kernel it boots; `None` is the lab's choice ([`KernelPin::selected`]: `XSCHED_LAB_KERNEL`,
    /// else 6.1).
    pub kernel: Option<KernelPin>,
    /// Number of virtual CPUs (1–16).
    pub vcpus: u32,
    /// Guest RAM in MiB (128–16384).
    pub memory_mib: u32,
    /// The workloads, started in order.
    pub workloads: Vec<Workload>,
    /// Extra plain busybox `sleep` processes (for a large process table).
    pub extra_sleepers: u32,
    /// Pause between two rounds of the guest's own view, in ms; 0 turns the view off.
    ///
    /// The view is not free: under TCG a round costs the guest about 5 ms of CPU per process listed
    /// (measured: ~48 processes with kernel threads at 1000 ms took ~20% of one vCPU; 4 without
    /// them, ~5%). Scheduling-sensitive tests should lengthen the interval or drop kernel threads.
    pub view_interval_ms: u32,
    /// Whether the view lists kernel threads (and zombies) too; leaving them out makes each round
    /// several times cheaper for the guest.
    pub view_kthreads: bool,
    /// Boot on QEMU's `max` CPU model so the kernel runs 5-level paging (LA57).
    pub la57: bool,
    /// Start QEMU the ordinary way, guest RAM anonymous memory of the QEMU process (`-m SIZE`
    /// only), instead of the shared RAM file: a guest for the `qemu-process:` backend.
    pub anonymous_ram: bool,
    /// Extra words for the kernel command line.
    pub kernel_args: Vec<String>,
    /// How long [`crate::Lab::boot`] waits for the ready line; `None` picks a default from the size.
    pub boot_timeout: Option<Duration>,
}

impl GuestSpec {
    /// A 1-vCPU, 256 MiB guest with no workloads and a view every second.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            kernel: None,
            vcpus: 1,
            memory_mib: 256,
            workloads: Vec::new(),
            extra_sleepers: 0,
            view_interval_ms: 1000,
            view_kthreads: true,
            la57: false,
            anonymous_ram: false,
            kernel_args: Vec::new(),
            boot_timeout: None,
        }
    }

    /// Boots `pin` instead of the lab's choice of kernel.
    pub fn kernel(mut self, pin: KernelPin) -> Self {
        self.kernel = Some(pin);
        self
    }

    /// The kernel this guest boots: its own, else the lab's choice ([`KernelPin::selected`]).
    pub fn effective_kernel(&self) -> Result<KernelPin, LabError> {
        self.kernel.clone().map_or_else(KernelPin::selected, Ok)
    }

    /// Sets the number of virtual CPUs.
    pub fn vcpus(mut self, vcpus: u32) -> Self {
        self.vcpus = vcpus;
        self
    }

    /// Sets the guest RAM in MiB.
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Adds a workload.
    pub fn workload(mut self, workload: Workload) -> Self {
        self.workloads.push(workload);
        self
    }

    /// Sets the number of extra `sleep` processes.
    pub fn extra_sleepers(mut self, count: u32) -> Self {
        self.extra_sleepers = count;
        self
    }

    /// Sets the pause between view rounds (0 = no view).
    pub fn view_interval_ms(mut self, ms: u32) -> Self {
        self.view_interval_ms = ms;
        self
    }

    /// Lists kernel threads (and zombies) in the view, or not.
    pub fn view_kthreads(mut self, on: bool) -> Self {
        self.view_kthreads = on;
        self
    }

    /// Chooses 5-level paging (`-cpu max`) or the default 4-level CPU model.
    pub fn la57(mut self, on: bool) -> Self {
        self.la57 = on;
        self
    }

    /// Gives the guest anonymous RAM (no shared RAM file), or the shared file (the default).
    pub fn anonymous_ram(mut self, on: bool) -> Self {
        self.anonymous_ram = on;
        self
    }

    /// Appends a word to the kernel command line.
    pub fn kernel_arg(mut self, arg: &str) -> Self {
        self.kernel_args.push(arg.to_owned());
        self
    }

    /// Overrides the boot timeout.
    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = Some(timeout);
        self
    }

    /// The boot timeout: the explicit one, else 120 s plus 50 ms per extra sleeper.
    pub fn effective_boot_timeout(&self) -> Duration {
        self.boot_timeout
            .unwrap_or_else(|| Duration::from_secs(120) + Duration::from_millis(50) * self.extra_sleepers)
    }

    /// Checks names, sizes and workloads.
    pub fn validate(&self) -> Result<(), LabError> {
        let fail = |reason: String| Err(LabError::Spec { guest: self.name.clone(), reason });
        if self.name.is_empty() || self.name.len() > 32 || !self.name.bytes().all(is_name_byte) {
            return fail("name: want 1-32 of [A-Za-z0-9_-]".into());
        }
        if !(1..=16).contains(&self.vcpus) {
            return fail(format!("vcpus {}: want 1-16", self.vcpus));
        }
        if !(128..=16384).contains(&self.memory_mib) {
            return fail(format!("memory {} MiB: want 128-16384", self.memory_mib));
        }
        for (i, w) in self.workloads.iter().enumerate() {
            w.validate().or_else(fail)?;
            if self.workloads[..i].iter().any(|o| o.name == w.name) {
                return fail(format!("workload name {:?} used twice", w.name));
            }
        }
        for arg in &self.kernel_args {
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '"') {
                return fail(format!("kernel argument {arg:?}: one word, no quotes"));
            }
        }
        Ok(())
    }

    /// `/etc/lab.conf`, sourced by the guest's scripts.
    pub fn lab_conf(&self) -> String {
        format!(
            "LAB_GUEST={}\nLAB_VIEW_INTERVAL_MS={}\nLAB_VIEW_KTHREADS={}\nLAB_EXTRA_SLEEPERS={}\n",
            self.name,
            self.view_interval_ms,
            u8::from(self.view_kthreads),
            self.extra_sleepers
        )
    }

    /// `/etc/lab.workloads`: one line per workload, read by the guest's `/lab/start`.
    pub fn lab_workloads(&self) -> String {
        self.workloads.iter().map(|w| format!("{}\n", w.spawn_args())).collect()
    }
}

/// Parses `NAME[:ITEM,ITEM...]`, where each ITEM is a guest option or a workload:
///
/// - `kernel=PIN` (`6.1`, `6.12`), `vcpus=N`, `mem=MIB`, `sleepers=N`, `view=MS`, `kthreads=0|1`,
///   `la57`, `anon` (anonymous RAM), `arg=KERNEL_WORD`;
/// - `COMM=KIND[*COUNT][@CGROUP]` with KIND `cpu`, `sleep`, `steered` or `phases:BUSY_MS:IDLE_MS`.
///
/// Example: `u1:kernel=6.12,vcpus=2,db=cpu,web=phases:200:300,bkup=cpu*2@g1`.
impl FromStr for GuestSpec {
    type Err = LabError;

    fn from_str(text: &str) -> Result<Self, LabError> {
        let (name, items) = text.split_once(':').unwrap_or((text, ""));
        let mut spec = GuestSpec::new(name);
        let fail = |reason: String| LabError::Spec { guest: name.to_owned(), reason };
        let number = |key: &str, value: &str| {
            value.parse::<u32>().map_err(|_| fail(format!("{key}={value}: not a number")))
        };
        for item in items.split(',').filter(|i| !i.is_empty()) {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            match key {
                "kernel" => spec.kernel = Some(KernelPin::named(value)?),
                "vcpus" => spec.vcpus = number(key, value)?,
                "mem" => spec.memory_mib = number(key, value)?,
                "sleepers" => spec.extra_sleepers = number(key, value)?,
                "view" => spec.view_interval_ms = number(key, value)?,
                "kthreads" => spec.view_kthreads = number(key, value)? != 0,
                "la57" if value.is_empty() => spec.la57 = true,
                "anon" if value.is_empty() => spec.anonymous_ram = true,
                "arg" => spec.kernel_args.push(value.to_owned()),
                _ if value.is_empty() => return Err(fail(format!("{item:?}: want KEY=VALUE"))),
                comm => spec.workloads.push(parse_workload(comm, value).map_err(fail)?),
            }
        }
        spec.validate()?;
        Ok(spec)
    }
}

/// Parses the `KIND[*COUNT][@CGROUP]` of a workload item.
fn parse_workload(comm: &str, value: &str) -> Result<Workload, String> {
    let (rest, group) = match value.rsplit_once('@') {
        Some((rest, group)) => (rest, Some(group)),
        None => (value, None),
    };
    let (kind, count) = match rest.split_once('*') {
        Some((kind, count)) => {
            (kind, count.parse::<u32>().map_err(|_| format!("{comm}={value}: bad count {count:?}"))?)
        }
        None => (rest, 1),
    };
    let kind = match kind.split(':').collect::<Vec<_>>().as_slice() {
        ["cpu"] => WorkloadKind::Cpu,
        ["sleep"] => WorkloadKind::Sleep,
        ["steered"] => WorkloadKind::Steered,
        ["phases", busy, idle] => {
            let ms = |s: &str| s.parse::<u32>().map_err(|_| format!("{comm}={value}: bad milliseconds {s:?}"));
            WorkloadKind::Phases { busy_ms: ms(busy)?, idle_ms: ms(idle)? }
        }
        _ => return Err(format!("{comm}={value}: kind must be cpu, sleep, steered or phases:BUSY_MS:IDLE_MS")),
    };
    let mut workload = Workload::new(comm, kind).count(count);
    if let Some(group) = group {
        workload = workload.in_cgroup(group);
    }
    Ok(workload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_command_line_form() -> Result<(), LabError> {
        let spec: GuestSpec = "u1:kernel=6.12,vcpus=2,mem=512,db=cpu,web=phases:200:300,bkup=cpu*2@g1/a,z=sleep,s=steered,view=0,kthreads=0".parse()?;
        assert_eq!(spec.name, "u1");
        assert_eq!((spec.vcpus, spec.memory_mib, spec.view_interval_ms), (2, 512, 0));
        let expected = GuestSpec::new("u1")
            .kernel(KernelPin::named("6.12")?)
            .vcpus(2)
            .memory_mib(512)
            .view_interval_ms(0)
            .view_kthreads(false)
            .workload(Workload::cpu("db"))
            .workload(Workload::phases("web", 200, 300))
            .workload(Workload::cpu("bkup").count(2).in_cgroup("g1/a"))
            .workload(Workload::sleep("z"))
            .workload(Workload::steered("s"));
        assert_eq!(spec, expected);
        let shown: Vec<String> = spec.workloads.iter().map(ToString::to_string).collect();
        assert_eq!(spec.effective_kernel()?.release, "6.12.117+deb12-cloud-amd64");
        assert_eq!(shown, ["db=cpu", "web=phases:200:300", "bkup=cpu*2@g1/a", "z=sleep", "s=steered"]);
        assert_eq!(
            spec.lab_workloads(),
            "db cpu 1 - 0 0\nweb phases 1 - 200 300\nbkup cpu 2 g1/a 0 0\nz sleep 1 - 0 0\ns steered 1 - 0 0\n"
        );
        assert_eq!("u2:anon".parse::<GuestSpec>()?, GuestSpec::new("u2").anonymous_ram(true));
        Ok(())
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in [
            "u1:db=cpu,db=sleep",
            "u1:view=cpu",
            "u1:x=phases:1",
            "u1:toolongname12345=cpu",
            "u1:a=cpu@../x",
            "u1:sleep=cpu",
            "u1:a=cpu*0",
            "u 1",
            "u1:vcpus=0",
            "u1:db",
            "u1:kernel=6.2",
            "u1:kernel",
        ] {
            assert!(bad.parse::<GuestSpec>().is_err(), "{bad} should not parse");
        }
        let unknown = "u1:kernel=5.10".parse::<GuestSpec>().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(unknown.contains("\"5.10\"") && unknown.contains("6.1, 6.12"), "{unknown}");
    }
}
