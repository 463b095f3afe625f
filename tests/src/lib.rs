//! The xsched guest lab: real Linux guests under QEMU for end-to-end tests.
//!
//! A [`GuestSpec`] describes a guest (vCPUs, RAM, workloads, cgroups, extra sleepers); [`Lab::boot`]
//! starts several in parallel under TCG with their RAM in a shared file in `/dev/shm` and waits until
//! each is ready. A [`Guest`] then offers:
//!
//! - its RAM file and QMP socket, for the host crate to read and edit guest memory;
//! - its own view of its processes ([`ProcView`], from `/proc/PID/stat` and `/proc/PID/schedstat`,
//!   printed on the serial console every `view_interval_ms`) as an oracle;
//! - a control channel ([`Guest::exec`]) that runs shell commands in the guest;
//! - the console's problem lines (warnings, BUGs, oopses, list corruption, panics).
//!
//! [`Lab::boot_libvirt`] boots the same guests as domains of a private, real `libvirtd`
//! ([`Libvirtd`]) instead.
//!
//! Every guest boots one of the pinned kernels (`tests/lab/kernels/NAME.env`): the one
//! `XSCHED_LAB_KERNEL` names (`6.1`, the default, `6.12` or `7.3`), or its spec's own
//! ([`GuestSpec::kernel`]); see [`kernel`].
//!
//! Nothing outlives the process: see [`cleanup`] for how QEMUs and directories are removed even when
//! a test panics or the process is killed. The guest side lives in `tests/lab/` (init scripts, kernel
//! pins, kernel fetch script); the kernels are cached outside the repository (see [`kernel`]).
//! [`xen`] boots the Xen lab (`tests/xen/`: Xen with a PV dom0 and two PV domUs, under QEMU) for
//! its end-to-end test.
//!
//! ```no_run
//! use xsched_lab::{shared_lab, GuestSpec, Workload};
//! let guests = shared_lab(|| vec![GuestSpec::new("u1").vcpus(2).workload(Workload::cpu("db"))]);
//! let (code, out) = guests[0].exec("cat /proc/loadavg").expect("exec");
//! ```

pub mod cleanup;
pub mod console;
mod control;
pub mod demo;
mod error;
mod guest;
pub mod host_cgroup;
pub mod initramfs;
pub mod kernel;
mod lab;
pub mod libvirt;
pub mod sched_check;
pub mod spec;
mod steer;
pub mod view;
pub mod xen;

pub use error::LabError;
pub use guest::{Guest, EXEC_TIMEOUT, KERNEL_CMDLINE, QMP_WAIT};
pub use kernel::{KernelFiles, KernelPin};
pub use lab::{guest, shared_lab, try_shared_lab, Lab};
pub use libvirt::Libvirtd;
pub use sched_check::{check_core, corrupt_core, SchedCheckReport};
pub use spec::{GuestSpec, Workload, WorkloadKind};
pub use steer::{CpuTimes, Steer};
pub use view::{ProcEntry, ProcView};
