//! Errors of reading a guest kernel.

use crate::arch::x86_64::TranslateError;
use crate::memory::{Gva, MemoryError};
use crate::profile::ProfileError;

/// Why a guest kernel could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    /// No banner of a known profile is in guest memory.
    #[error("{0}")]
    NoMatchingProfile(String),
    /// The guest contradicts its profile: something found does not check out.
    #[error("guest kernel {release}: {what}")]
    Inconsistent {
        /// The kernel release.
        release: String,
        /// What does not check out.
        what: String,
    },
    /// A walk met something a valid kernel cannot contain, said in words: what the scheduler
    /// flavour modules (`actuate::fair`) and the flavour-neutral write path still report this way.
    #[error("{0}")]
    Walk(String),
    /// A list's link does not point back: `prev.next` is `next`, whose `prev` is `back`.
    #[error("list at {head}: broken link: {prev}.next is {next}, whose prev is {back}")]
    BrokenLink {
        /// The list's head.
        head: Gva,
        /// The node whose `next` was followed.
        prev: Gva,
        /// Where it led.
        next: Gva,
        /// What that node's `prev` holds instead of `prev`.
        back: Gva,
    },
    /// A list holds more entries than its walk's limit (it cycles past its head, or is garbage).
    #[error("list at {head}: more than {limit} entries")]
    ListTooLong {
        /// The list's head.
        head: Gva,
        /// The limit.
        limit: usize,
    },
    /// A red-black node's `__rb_parent_color` names another parent than the node it hangs under.
    #[error("rbtree: node {node} records parent {recorded}, but hangs under {parent}")]
    RbWrongParent {
        /// The `rb_node`.
        node: Gva,
        /// The parent it records.
        recorded: Gva,
        /// The node it hangs under.
        parent: Gva,
    },
    /// A red-black tree holds more nodes than its walk's limit.
    #[error("rbtree: more than {limit} nodes")]
    RbTooMany {
        /// The limit.
        limit: usize,
    },
    /// A red-black tree is deeper than any valid one.
    #[error("rbtree: deeper than {limit} levels")]
    RbTooDeep {
        /// The deepest accepted.
        limit: usize,
    },
    /// Task groups (`cfs_rq`s under group entities) nest deeper than the reader accepts.
    #[error("cfs_rq {cfs_rq}: task groups nested deeper than {limit}")]
    GroupsTooDeep {
        /// The `cfs_rq` reached too deep.
        cfs_rq: Gva,
        /// The deepest accepted.
        limit: usize,
    },
    /// A `cfs_rq` is reached twice through group entities: the hierarchy cycles.
    #[error("cfs_rq {cfs_rq} is reached twice through group entities")]
    CfsRqTwice {
        /// The `cfs_rq`.
        cfs_rq: Gva,
    },
    /// A cgroup's `kernfs_node` parents nest deeper than the reader accepts.
    #[error("cgroup of css_set {css_set}: deeper than {limit} levels")]
    CgroupTooDeep {
        /// The task's `css_set`.
        css_set: Gva,
        /// The deepest accepted.
        limit: usize,
    },
    /// A task appears twice in the task lists.
    #[error("task {task} is listed twice")]
    TaskTwice {
        /// Its `task_struct`.
        task: Gva,
    },
    /// A copy of a `task_struct` is too short for the fields decoded from it.
    #[error("task at {task}: {copy} does not hold its fields")]
    ShortTaskCopy {
        /// The `task_struct`.
        task: Gva,
        /// Which copy: "the copy" (the whole record) or "the probe's copy".
        copy: &'static str,
    },
    /// An address plus an offset passes the top of the address space.
    #[error("{va} + {offset:#x} overflows")]
    AddressOverflow {
        /// The address.
        va: Gva,
        /// The offset.
        offset: u64,
    },
    /// `container_of` of a node below its field's offset.
    #[error("{node} cannot hold a field at +{offset:#x}")]
    NoContainer {
        /// The member's address.
        node: Gva,
        /// The member's offset in its struct.
        offset: u64,
    },
    /// Part of a struct to read lies beyond the buffer it is read into.
    #[error("extent +{start:#x}..+{end:#x} lies beyond the {len}-byte buffer")]
    ExtentBeyond {
        /// Its first byte's offset.
        start: u64,
        /// The offset past its last byte.
        end: u64,
        /// The buffer's length.
        len: usize,
    },
    /// A field lies beyond the bytes read of its struct.
    #[error("field at +{offset:#x} lies beyond the {len} bytes read at {base}")]
    FieldBeyond {
        /// The struct's address.
        base: Gva,
        /// The field's offset.
        offset: u64,
        /// The bytes read.
        len: usize,
    },
    /// A field that must fit 32 bits (`int`, `unsigned int`, `pid_t`) holds more.
    #[error("{value:#x} at {base}+{offset:#x} does not fit 32 bits")]
    Not32Bits {
        /// The struct's address.
        base: Gva,
        /// The field's offset.
        offset: u64,
        /// The value.
        value: u64,
    },
    /// A C string runs past the top of the address space.
    #[error("string at {at} wraps")]
    StringWraps {
        /// Its address.
        at: Gva,
    },
    /// A C string is longer than the reader accepts.
    #[error("string at {at} is longer than {max} bytes")]
    StringTooLong {
        /// Its address.
        at: Gva,
        /// The longest accepted.
        max: usize,
    },
    /// A batch of writes is larger than the redo log holds.
    #[error("a batch of {bytes} bytes of writes does not fit the {capacity}-byte redo log")]
    BatchTooLarge {
        /// The batch's size in the log.
        bytes: usize,
        /// The log's capacity.
        capacity: usize,
    },
    /// A list to insert into is not linked both ways around the insertion point (the check
    /// `DEBUG_LIST` makes).
    #[error("list corrupted around {prev} and {next}")]
    ListCorrupted {
        /// The node before the insertion point.
        prev: Gva,
        /// The node after it.
        next: Gva,
    },
    /// A node to insert into a list is on it already.
    #[error("{node} is already on the list")]
    AlreadyListed {
        /// The node.
        node: Gva,
    },
    /// The profile lacks something.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// Guest memory could not be read.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A kernel-virtual address did not translate.
    #[error(transparent)]
    Translate(#[from] TranslateError),
}
