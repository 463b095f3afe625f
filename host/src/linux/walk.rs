//! Bounded walkers over the kernel's linked structures: `list_head` lists and red-black trees.
//!
//! Everything they read may be garbage written by the guest, so each walk checks the back link of
//! every link it follows (`next->prev == node`; a child's parent pointer) and stops at a limit. A
//! walk is a lazy iterator of `Result` that ends after its first error.
//!
//! The back-link check is also the cycle check: in memory that does not change during the walk, a
//! node reached twice would need two different back links (or a node before it reached twice, and
//! so on back to the head or root, which cannot be re-entered). A guest that runs during a walk
//! can still make it long; the limit bounds that.

use crate::memory::Gva;
use crate::profile::Profile;

use super::virt::KernelMemory;
use super::LinuxError;

/// Field offsets of `struct list_head`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListHeadLayout {
    /// `list_head.next`.
    pub next: u64,
    /// `list_head.prev`.
    pub prev: u64,
}

impl ListHeadLayout {
    /// Resolves the layout from a profile.
    pub fn from_profile(profile: &Profile) -> Result<Self, LinuxError> {
        Ok(Self { next: profile.offset("list_head", "next")?, prev: profile.offset("list_head", "prev")? })
    }
}

/// Field offsets of `struct rb_node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RbNodeLayout {
    /// `rb_node.__rb_parent_color`: the parent pointer, colour in bit 0.
    pub parent_color: u64,
    /// `rb_node.rb_right`.
    pub right: u64,
    /// `rb_node.rb_left`.
    pub left: u64,
}

impl RbNodeLayout {
    /// Resolves the layout from a profile.
    pub fn from_profile(profile: &Profile) -> Result<Self, LinuxError> {
        Ok(Self {
            parent_color: profile.offset("rb_node", "__rb_parent_color")?,
            right: profile.offset("rb_node", "rb_right")?,
            left: profile.offset("rb_node", "rb_left")?,
        })
    }
}

/// `list_for_each`: the nodes of the circular list headed at `head`, excluding the head.
///
/// Yields each node's `list_head` address (use `container_of` arithmetic for the entry). Ends
/// with an error on a broken link, a cycle that skips the head, or more than `limit` nodes.
pub fn list_for_each<'a, K: KernelMemory + ?Sized>(
    mem: &'a K,
    layout: ListHeadLayout,
    head: Gva,
    limit: usize,
) -> ListWalk<'a, K> {
    ListWalk { mem, layout, head, prev: head, next: None, count: 0, limit, finished: false }
}

/// The iterator of [`list_for_each`].
#[derive(Debug)]
pub struct ListWalk<'a, K: ?Sized> {
    mem: &'a K,
    layout: ListHeadLayout,
    head: Gva,
    prev: Gva,
    /// `prev.next`, read together with `prev.prev` when `prev` was checked.
    next: Option<Gva>,
    count: usize,
    limit: usize,
    finished: bool,
}

impl<K: KernelMemory + ?Sized> ListWalk<'_, K> {
    /// `(node.next, node.prev)`: one read when the two are adjacent, as in every `list_head`.
    fn links(&self, node: Gva) -> Result<(Gva, Gva), LinuxError> {
        let ListHeadLayout { next, prev } = self.layout;
        if next.abs_diff(prev) != 8 {
            return Ok((self.mem.read_ptr(add(node, next)?)?, self.mem.read_ptr(add(node, prev)?)?));
        }
        let mut both = [0u8; 16];
        self.mem.read_virt(add(node, next.min(prev))?, &mut both)?;
        let (low, high) = both.split_at(8);
        let word = |b: &[u8]| Gva(u64::from_le_bytes(b.try_into().unwrap_or_default()));
        Ok(if next < prev { (word(low), word(high)) } else { (word(high), word(low)) })
    }

    fn step(&mut self) -> Result<Option<Gva>, LinuxError> {
        let next = match self.next.take() {
            Some(next) => next,
            None => self.mem.read_ptr(add(self.prev, self.layout.next)?)?,
        };
        if next == self.head {
            return Ok(None);
        }
        let (after, back) = self.links(next)?;
        if back != self.prev {
            return Err(LinuxError::BrokenLink { head: self.head, prev: self.prev, next, back });
        }
        if self.count >= self.limit {
            return Err(LinuxError::ListTooLong { head: self.head, limit: self.limit });
        }
        self.count += 1;
        self.prev = next;
        self.next = Some(after);
        Ok(Some(next))
    }
}

impl<K: KernelMemory + ?Sized> Iterator for ListWalk<'_, K> {
    type Item = Result<Gva, LinuxError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let item = self.step().transpose();
        self.finished = !matches!(item, Some(Ok(_)));
        item
    }
}

/// Deepest red-black tree accepted: a valid tree of 2^64 nodes is at most 128 deep.
const MAX_RB_DEPTH: usize = 128;

/// In-order walk (`rb_first`, `rb_next`, …) of the red-black tree whose root node is `root`
/// (`rb_root.rb_node`, possibly null). Yields each `rb_node` address, smallest key first.
///
/// Ends with an error on a child whose parent pointer does not point back (which includes any
/// cycle), a tree deeper than a valid one can be, or more than `limit` nodes.
pub fn rb_for_each<'a, K: KernelMemory + ?Sized>(mem: &'a K, layout: RbNodeLayout, root: Gva, limit: usize) -> RbWalk<'a, K> {
    let mut walk = RbWalk { mem, layout, stack: Vec::new(), count: 0, limit, pending: None, finished: false };
    if root != Gva(0) {
        walk.pending = Some((root, Gva(0)));
    }
    walk
}

/// The iterator of [`rb_for_each`].
#[derive(Debug)]
pub struct RbWalk<'a, K: ?Sized> {
    mem: &'a K,
    layout: RbNodeLayout,
    /// Nodes whose left subtree is being visited.
    stack: Vec<Gva>,
    count: usize,
    limit: usize,
    /// A subtree still to descend into: (its root, that root's expected parent).
    pending: Option<(Gva, Gva)>,
    finished: bool,
}

impl<K: KernelMemory + ?Sized> RbWalk<'_, K> {
    /// Pushes `node` and its chain of left children.
    fn descend(&mut self, mut node: Gva, mut parent: Gva) -> Result<(), LinuxError> {
        loop {
            let recorded = Gva(self.mem.read_u64(add(node, self.layout.parent_color)?)? & !3);
            if recorded != parent {
                return Err(LinuxError::RbWrongParent { node, recorded, parent });
            }
            if self.count >= self.limit {
                return Err(LinuxError::RbTooMany { limit: self.limit });
            }
            self.count += 1;
            if self.stack.len() >= MAX_RB_DEPTH {
                return Err(LinuxError::RbTooDeep { limit: MAX_RB_DEPTH });
            }
            self.stack.push(node);
            let left = self.mem.read_ptr(add(node, self.layout.left)?)?;
            if left == Gva(0) {
                return Ok(());
            }
            parent = node;
            node = left;
        }
    }

    fn step(&mut self) -> Result<Option<Gva>, LinuxError> {
        if let Some((node, parent)) = self.pending.take() {
            self.descend(node, parent)?;
        }
        let Some(node) = self.stack.pop() else { return Ok(None) };
        let right = self.mem.read_ptr(add(node, self.layout.right)?)?;
        if right != Gva(0) {
            self.pending = Some((right, node));
        }
        Ok(Some(node))
    }
}

impl<K: KernelMemory + ?Sized> Iterator for RbWalk<'_, K> {
    type Item = Result<Gva, LinuxError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let item = self.step().transpose();
        self.finished = !matches!(item, Some(Ok(_)));
        item
    }
}

/// `va + offset`, failing instead of wrapping.
#[inline]
pub(crate) fn add(va: Gva, offset: u64) -> Result<Gva, LinuxError> {
    va.checked_add(offset).ok_or(LinuxError::AddressOverflow { va, offset })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{Gpa, GuestMemory, ImageMemory};
    use crate::linux::virt::DirectMapped;

    const BASE: Gva = Gva(0xffff_8880_0000_0000);
    const LIST: ListHeadLayout = ListHeadLayout { next: 0, prev: 8 };
    const RB: RbNodeLayout = RbNodeLayout { parent_color: 0, right: 8, left: 16 };

    fn image() -> DirectMapped<ImageMemory> {
        DirectMapped::new(ImageMemory::zeroed(1 << 16), BASE)
    }

    fn put(img: &mut DirectMapped<ImageMemory>, gpa: u64, value: Gva) {
        img.memory_mut().write_u64(Gpa(gpa), value.raw()).expect("in image");
    }

    /// Links list nodes at the given physical addresses into a circle (the first is the head).
    fn link_list(img: &mut DirectMapped<ImageMemory>, nodes: &[u64]) {
        for (i, &n) in nodes.iter().enumerate() {
            let next = nodes[(i + 1) % nodes.len()];
            let prev = nodes[(i + nodes.len() - 1) % nodes.len()];
            put(img, n, BASE.checked_add(next).expect("va"));
            put(img, n + 8, BASE.checked_add(prev).expect("va"));
        }
    }

    fn walk_list(img: &DirectMapped<ImageMemory>, limit: usize) -> Vec<Result<Gva, LinuxError>> {
        list_for_each(img, LIST, BASE, limit).collect()
    }

    #[test]
    fn list_walk_yields_nodes_in_order() {
        let mut img = image();
        link_list(&mut img, &[0, 0x100, 0x300, 0x200]);
        let nodes: Vec<u64> = walk_list(&img, 10).into_iter().map(|r| r.expect("valid").raw() - BASE.raw()).collect();
        assert_eq!(nodes, vec![0x100, 0x300, 0x200]);
        link_list(&mut img, &[0]);
        assert!(walk_list(&img, 10).is_empty());
    }

    #[test]
    fn hostile_lists_end_with_an_error() {
        let mut img = image();
        // A cycle that never returns to the head: 0 -> 0x100 -> 0x200 -> 0x100 ...
        link_list(&mut img, &[0, 0x100, 0x200]);
        put(&mut img, 0x200, BASE.checked_add(0x100).expect("va"));
        let items = walk_list(&img, 1000);
        assert!(matches!(items.last(), Some(Err(LinuxError::BrokenLink { .. }))), "{items:?}");
        // The same cycle with its own prev pointers agreeing: the head's link gives it away.
        put(&mut img, 0x108, BASE.checked_add(0x200).expect("va"));
        let items = walk_list(&img, 1000);
        assert!(matches!(items.last(), Some(Err(LinuxError::BrokenLink { .. }))), "{items:?}");
        // Too long.
        link_list(&mut img, &[0, 0x100, 0x200, 0x300]);
        let items = walk_list(&img, 2);
        assert_eq!(items.len(), 3);
        assert!(matches!(items.last(), Some(Err(LinuxError::ListTooLong { limit: 2, .. }))));
        // A pointer out of the image.
        put(&mut img, 0, Gva(0xdead_beef));
        assert!(matches!(walk_list(&img, 10).as_slice(), [Err(LinuxError::Memory(_))]));
    }

    /// Builds a tree node at `gpa` with parent/left/right (physical, 0 = none).
    fn rb_node(img: &mut DirectMapped<ImageMemory>, gpa: u64, parent: u64, left: u64, right: u64) {
        let va = |p: u64| if p == 0 { Gva(0) } else { BASE.checked_add(p).expect("va") };
        put(img, gpa, Gva(va(parent).raw() | 1));
        put(img, gpa + 8, va(right));
        put(img, gpa + 16, va(left));
    }

    fn walk_tree(img: &DirectMapped<ImageMemory>, root: u64, limit: usize) -> Vec<Result<Gva, LinuxError>> {
        rb_for_each(img, RB, BASE.checked_add(root).expect("va"), limit).collect()
    }

    #[test]
    fn rb_walk_is_in_order() {
        let mut img = image();
        //        0x400
        //      /       \
        //   0x200     0x600
        //   /   \         \
        // 0x100 0x300     0x700
        rb_node(&mut img, 0x400, 0, 0x200, 0x600);
        rb_node(&mut img, 0x200, 0x400, 0x100, 0x300);
        rb_node(&mut img, 0x600, 0x400, 0, 0x700);
        rb_node(&mut img, 0x100, 0x200, 0, 0);
        rb_node(&mut img, 0x300, 0x200, 0, 0);
        rb_node(&mut img, 0x700, 0x600, 0, 0);
        let order: Vec<u64> = walk_tree(&img, 0x400, 100).into_iter().map(|r| r.expect("valid").raw() - BASE.raw()).collect();
        assert_eq!(order, vec![0x100, 0x200, 0x300, 0x400, 0x600, 0x700]);
        assert!(rb_for_each(&img, RB, Gva(0), 10).next().is_none());
    }

    #[test]
    fn hostile_trees_end_with_an_error() {
        let mut img = image();
        // A child whose parent pointer is wrong.
        rb_node(&mut img, 0x400, 0, 0x200, 0);
        rb_node(&mut img, 0x200, 0x999, 0, 0);
        assert!(matches!(walk_tree(&img, 0x400, 10).last(), Some(Err(LinuxError::RbWrongParent { .. }))));
        // A cycle: 0x200's right child is the root, with a forged parent pointer.
        rb_node(&mut img, 0x200, 0x400, 0, 0x400);
        let items = walk_tree(&img, 0x400, 10);
        assert!(matches!(items.last(), Some(Err(LinuxError::RbWrongParent { .. }))), "{items:?}");
        // A left spine longer than the limit.
        for i in 1..40u64 {
            rb_node(&mut img, i * 0x100, (i - 1) * 0x100, (i + 1) * 0x100, 0);
        }
        let items = walk_tree(&img, 0x100, 16);
        assert!(matches!(items.last(), Some(Err(LinuxError::RbTooMany { limit: 16 }))), "{items:?}");
    }
}
