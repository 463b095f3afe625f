//! Changing a guest's red-black trees from outside: `rb_add_cached`, `rb_erase_cached` and a
//! checker, over any store of `struct rb_node`s.
//!
//! The CFS runqueue keeps runnable entities in `cfs_rq.tasks_timeline`, an `rb_root_cached` ordered
//! by `entity_before` (signed difference of vruntimes; equal keys go right). [`insert_cached`] and
//! [`erase_cached`] make the same pointer and colour changes as Linux 6.1's `lib/rbtree.c`
//! (`__rb_insert`, `__rb_erase_augmented`, `____rb_erase_color`, without augmentation), so the
//! guest finds a tree its own code could have built. (Checked once against 6.1's `lib/rbtree.c`
//! compiled in user space: after each of 149,352 random inserts and erases, including equal keys
//! and keys across the u64 wrap, every node field, the root, the leftmost and the return values
//! were identical.)
//!
//! Nodes live behind the [`RbNodes`] trait: [`GuestRbTree`] reads and writes them in guest
//! kernel-virtual memory; tests use an in-memory store. An insert or erase writes as it goes, so
//! on a guest it runs over a write overlay (`actuate::staged`), in this order:
//!
//! 1. [`check_tree`] on the tree as it is (never write into a tree that is already broken);
//! 2. [`insert_cached`] or [`erase_cached`] through the overlay;
//! 3. [`check_tree`] through the overlay, and the node count moved by one;
//! 4. apply the overlay's writes. An error before that leaves the guest untouched; one in the
//!    middle of an insert or erase would leave its tree half changed.
//!
//! Everything read may be garbage: every loop is bounded by the deepest valid tree, and a null
//! pointer where the algorithm needs a node is an error, never a read of address 0.

use std::collections::HashSet;

use crate::linux::flavour::Flavour;
use crate::linux::virt::KernelMemoryMut;
use crate::linux::walk::RbNodeLayout;
use crate::linux::LinuxError;
use crate::memory::Gva;
use crate::profile::Profile;

/// Colour bit value of a red node (`RB_RED`).
const RB_RED: u64 = 0;
/// Colour bit value of a black node (`RB_BLACK`).
const RB_BLACK: u64 = 1;
/// Deepest tree accepted: a valid red-black tree of 2^64 nodes is at most 128 deep.
const MAX_DEPTH: usize = 128;
/// The null node pointer.
const NULL: Gva = Gva(0);

/// Why a tree could not be checked or changed.
#[derive(Debug, thiserror::Error)]
pub enum RbTreeError {
    /// A node, the root or the cached leftmost could not be read or written.
    #[error("rbtree: {0}")]
    Memory(#[from] LinuxError),
    /// The tree (or the node to insert or erase) is not what a valid red-black tree holds.
    #[error("rbtree: {0}")]
    Corrupt(Corruption),
}

/// What makes a tree, or a node to insert or erase, one a valid red-black tree cannot hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// The node to insert is in the tree already.
    #[error("{node} is already in the tree")]
    AlreadyInTree {
        /// The `rb_node`.
        node: Gva,
    },
    /// The node to erase is not in this tree.
    #[error("{node} is not in this tree")]
    NotInTree {
        /// The `rb_node`.
        node: Gva,
    },
    /// An ancestor of the node to erase records a parent that does not hold it.
    #[error("{node} is not in this tree: {ancestor} records parent {parent}, which does not hold it")]
    NotHeld {
        /// The `rb_node` to erase.
        node: Gva,
        /// The ancestor.
        ancestor: Gva,
        /// The parent it records.
        parent: Gva,
    },
    /// The node to erase has more ancestors than a valid tree is deep.
    #[error("{node} is not in this tree: more than {limit} ancestors")]
    TooManyAncestors {
        /// The `rb_node`.
        node: Gva,
        /// The deepest valid tree.
        limit: usize,
    },
    /// The tree is deeper than a valid one.
    #[error("deeper than {limit} levels")]
    TooDeep {
        /// The deepest valid tree.
        limit: usize,
    },
    /// The tree holds more nodes than its check's limit.
    #[error("more than {limit} nodes")]
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// An insert or erase rebalanced for more rounds than a valid tree needs.
    #[error("{op} rebalancing ran more than {limit} rounds")]
    Rebalancing {
        /// "insert" or "erase".
        op: &'static str,
        /// The deepest valid tree.
        limit: usize,
    },
    /// Augmented values were propagated up more levels than a valid tree has.
    #[error("augmented propagation ran more than {limit} levels")]
    Propagation {
        /// The deepest valid tree.
        limit: usize,
    },
    /// A red node met as the root during an insert's rebalancing.
    #[error("red root {root}")]
    RedRoot {
        /// The node.
        root: Gva,
    },
    /// No in-order successor of a node with a right child within a valid tree's depth.
    #[error("no successor of {node} within {limit} levels")]
    NoSuccessor {
        /// The `rb_node`.
        node: Gva,
        /// The deepest valid tree.
        limit: usize,
    },
    /// The node's address cannot be an `rb_node` (null, or not aligned for its colour bits).
    #[error("{node} is not a valid rb_node address")]
    BadAddress {
        /// The address.
        node: Gva,
    },
    /// The root is red, or records a parent.
    #[error("root {root} is not black with a null parent")]
    BadRoot {
        /// The root.
        root: Gva,
    },
    /// The cached leftmost is not the first node in order.
    #[error("rb_leftmost is {leftmost}, but the first node is {first}")]
    WrongLeftmost {
        /// `rb_leftmost`.
        leftmost: Gva,
        /// The first node in order.
        first: Gva,
    },
    /// The keys span more than a `u64` holds.
    #[error("key span overflows")]
    KeySpanOverflow,
    /// A node is reached twice: the tree has a cycle or a shared subtree.
    #[error("{node} is reached twice")]
    Twice {
        /// The `rb_node`.
        node: Gva,
    },
    /// A node records another parent than the node it hangs under.
    #[error("{node} records parent {recorded}, but hangs under {parent}")]
    WrongParent {
        /// The `rb_node`.
        node: Gva,
        /// The parent it records.
        recorded: Gva,
        /// The node it hangs under.
        parent: Gva,
    },
    /// Bit 1 of `__rb_parent_color` is set (only bit 0, the colour, may be).
    #[error("{node} has bit 1 of __rb_parent_color set ({parent_color:#x})")]
    ParentColorBit1 {
        /// The `rb_node`.
        node: Gva,
        /// Its `__rb_parent_color`.
        parent_color: u64,
    },
    /// A red node has a red child.
    #[error("red {node} has red child {child}")]
    RedRed {
        /// The red node.
        node: Gva,
        /// Its red child.
        child: Gva,
    },
    /// A node's key sorts before its predecessor's.
    #[error("{node} (key {key:#x}) follows {prev} (key {prev_key:#x}) in order")]
    OutOfOrder {
        /// The `rb_node`.
        node: Gva,
        /// Its key.
        key: u64,
        /// Its in-order predecessor.
        prev: Gva,
        /// The predecessor's key.
        prev_key: u64,
    },
    /// The keys up to a node span 2^63 or more: their signed differences no longer order them.
    #[error("keys up to {node} span 2^63 or more")]
    KeySpan {
        /// The `rb_node`.
        node: Gva,
    },
    /// A node's subtrees have different black heights.
    #[error("{node}: black height {left} on the left, {right} on the right")]
    BlackHeight {
        /// The `rb_node`.
        node: Gva,
        /// Its left subtree's black height.
        left: usize,
        /// Its right subtree's.
        right: usize,
    },
    /// A node's address lies below its offset in its entry: no entry can hold it.
    #[error("{node} cannot be an rb_node at +{offset:#x} in its entry")]
    NoEntry {
        /// The `rb_node`.
        node: Gva,
        /// Its offset in its entry.
        offset: u64,
    },
    /// A null node is dereferenced, or its entry or key is asked for.
    #[error("{0} of a null node")]
    Null(&'static str),
    /// An augmented node's `min_vruntime` is not its subtree's smallest vruntime.
    #[error("{node}: min_vruntime is {found:#x}, its subtree's smallest vruntime {expected:#x}")]
    MinVruntime {
        /// The `rb_node`.
        node: Gva,
        /// Its `min_vruntime`.
        found: u64,
        /// Its subtree's smallest vruntime.
        expected: u64,
    },
    /// An augmented node's `min_slice`/`max_slice` are not its subtree's smallest and largest
    /// `slice` (where the kernel keeps them exact: 7.3).
    #[error("{node}: min_slice/max_slice are {}/{:?}, its subtree's {}/{:?}", found.0, found.1, expected.0, expected.1)]
    Slices {
        /// The `rb_node`.
        node: Gva,
        /// Its `min_slice` and `max_slice`.
        found: (u64, Option<u64>),
        /// Its subtree's smallest and largest `slice`.
        expected: (u64, Option<u64>),
    },
}

/// Result of this module.
pub type Result<T, E = RbTreeError> = std::result::Result<T, E>;

fn corrupt(what: Corruption) -> RbTreeError {
    RbTreeError::Corrupt(what)
}

/// A store of `struct rb_node`s forming one `struct rb_root_cached`, nodes addressed by [`Gva`].
///
/// Accessors are the raw fields; the colour lives in bit 0 of `__rb_parent_color` (set = black).
pub trait RbNodes {
    /// `n->__rb_parent_color`: the parent pointer, colour in bit 0.
    fn parent_color(&self, n: Gva) -> Result<u64>;
    /// `n->rb_left`.
    fn left(&self, n: Gva) -> Result<Gva>;
    /// `n->rb_right`.
    fn right(&self, n: Gva) -> Result<Gva>;
    /// The sort key of the entry holding `n` (for CFS: `sched_entity.vruntime`), compared as a
    /// signed difference like `entity_before`.
    fn key(&self, n: Gva) -> Result<u64>;
    /// Sets `n->__rb_parent_color`.
    fn set_parent_color(&mut self, n: Gva, value: u64) -> Result<()>;
    /// Sets `n->rb_left`.
    fn set_left(&mut self, n: Gva, child: Gva) -> Result<()>;
    /// Sets `n->rb_right`.
    fn set_right(&mut self, n: Gva, child: Gva) -> Result<()>;
    /// `rb_root_cached.rb_root.rb_node`.
    fn root(&self) -> Result<Gva>;
    /// Sets `rb_root_cached.rb_root.rb_node`.
    fn set_root(&mut self, n: Gva) -> Result<()>;
    /// `rb_root_cached.rb_leftmost`.
    fn leftmost(&self) -> Result<Gva>;
    /// Sets `rb_root_cached.rb_leftmost`.
    fn set_leftmost(&mut self, n: Gva) -> Result<()>;
    /// The augmented tree's `propagate(n, stop)` callback: recomputes the augmented values of
    /// `n` and its ancestors, up to `stop` (null: the root), until one comes out unchanged.
    /// Plain trees have none.
    fn augment_propagate(&mut self, _n: Gva, _stop: Gva) -> Result<()> {
        Ok(())
    }
    /// The augmented tree's `copy(old, new)` callback: `new` takes `old`'s augmented value
    /// (an erase moves the successor into the erased node's place). Plain trees have none.
    fn augment_copy(&mut self, _old: Gva, _new: Gva) -> Result<()> {
        Ok(())
    }
    /// The augmented tree's `rotate(old, new)` callback, called after a rotation made `new`
    /// take `old`'s place. Plain trees have none.
    fn augment_rotate(&mut self, _old: Gva, _new: Gva) -> Result<()> {
        Ok(())
    }
    /// Checks the augmented values the kernel keeps exact at `n` against its children's (for
    /// [`check_tree`]). Plain trees have none.
    fn augment_verify(&self, _n: Gva) -> Result<()> {
        Ok(())
    }
}

/// `entity_before`: whether key `a` sorts before key `b`, `(s64)(a - b) < 0`.
pub fn key_before(a: u64, b: u64) -> bool {
    // The cast reinterprets the wrapped difference as signed, as the kernel's `(s64)` does.
    (a.wrapping_sub(b) as i64) < 0
}

/// Which child of its parent a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Left,
    Right,
}

impl Dir {
    fn flip(self) -> Self {
        match self {
            Dir::Left => Dir::Right,
            Dir::Right => Dir::Left,
        }
    }
}

/// The `__rb_parent_color` value of a node under `parent` with `color`.
fn parent_color_of(parent: Gva, color: u64) -> u64 {
    parent.raw() | color
}

/// The parent pointer held in a `__rb_parent_color` value (`__rb_parent`).
fn parent_in(pc: u64) -> Gva {
    Gva(pc & !3)
}

/// The kernel's `rbtree_augmented.h` helpers, over any store.
trait RbOps: RbNodes {
    fn child(&self, n: Gva, dir: Dir) -> Result<Gva> {
        match dir {
            Dir::Left => self.left(n),
            Dir::Right => self.right(n),
        }
    }

    fn set_child(&mut self, n: Gva, dir: Dir, child: Gva) -> Result<()> {
        match dir {
            Dir::Left => self.set_left(n, child),
            Dir::Right => self.set_right(n, child),
        }
    }

    fn rb_parent(&self, n: Gva) -> Result<Gva> {
        self.parent_color(n).map(parent_in)
    }

    fn rb_is_black(&self, n: Gva) -> Result<bool> {
        Ok(self.parent_color(n)? & 1 == RB_BLACK)
    }

    fn rb_set_parent_color(&mut self, n: Gva, parent: Gva, color: u64) -> Result<()> {
        self.set_parent_color(n, parent_color_of(parent, color))
    }

    /// `rb_set_parent`: a new parent, the colour kept.
    fn rb_set_parent(&mut self, n: Gva, parent: Gva) -> Result<()> {
        let color = self.parent_color(n)? & 1;
        self.rb_set_parent_color(n, parent, color)
    }

    fn rb_set_black(&mut self, n: Gva) -> Result<()> {
        let pc = self.parent_color(n)?;
        self.set_parent_color(n, pc | RB_BLACK)
    }

    /// `__rb_change_child`: makes `new` take `old`'s place under `parent` (or as the root).
    fn rb_change_child(&mut self, old: Gva, new: Gva, parent: Gva) -> Result<()> {
        if parent == NULL {
            self.set_root(new)
        } else if self.left(parent)? == old {
            self.set_left(parent, new)
        } else {
            self.set_right(parent, new)
        }
    }

    /// `__rb_rotate_set_parents`: `new` takes `old`'s parent and colour; `old` goes under `new`
    /// with `color`.
    fn rb_rotate_set_parents(&mut self, old: Gva, new: Gva, color: u64) -> Result<()> {
        let pc = self.parent_color(old)?;
        self.set_parent_color(new, pc)?;
        self.rb_set_parent_color(old, new, color)?;
        self.rb_change_child(old, new, parent_in(pc))
    }
}

impl<N: RbNodes + ?Sized> RbOps for N {}

/// `rb_add_cached(node, tree, __entity_less)`, or `rb_add_augmented_cached` for an augmented tree:
/// inserts `node` (not in the tree, its link fields ignored) ordered by [`RbNodes::key`], after
/// any equal keys, propagates the augmented values from its parent up (before rebalancing, as
/// the kernel does) and rebalances like `__rb_insert`, calling the rotate callback where it does.
///
/// Returns whether `node` became the leftmost (then `rb_leftmost` points to it).
pub fn insert_cached<N: RbNodes + ?Sized>(tree: &mut N, node: Gva) -> Result<bool> {
    check_node_address(node)?;
    let key = tree.key(node)?;
    let mut parent = NULL;
    let mut side = Dir::Left;
    let mut link = tree.root()?;
    let mut leftmost = true;
    let mut depth = 0;
    while link != NULL {
        if link == node {
            return Err(corrupt(Corruption::AlreadyInTree { node }));
        }
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(corrupt(Corruption::TooDeep { limit: MAX_DEPTH }));
        }
        parent = link;
        if key_before(key, tree.key(parent)?) {
            side = Dir::Left;
        } else {
            side = Dir::Right;
            leftmost = false;
        }
        link = tree.child(parent, side)?;
    }
    // rb_link_node: red, no children.
    tree.rb_set_parent_color(node, parent, RB_RED)?;
    tree.set_left(node, NULL)?;
    tree.set_right(node, NULL)?;
    if parent == NULL {
        tree.set_root(node)?;
    } else {
        tree.set_child(parent, side, node)?;
        // augment->propagate(parent, NULL) /* suboptimal */
        tree.augment_propagate(parent, NULL)?;
    }
    // rb_insert_color_cached / rb_insert_augmented_cached
    if leftmost {
        tree.set_leftmost(node)?;
    }
    insert_color(tree, node)?;
    Ok(leftmost)
}

/// `__rb_insert`: restores the red-black rules after red `node` was linked in.
///
/// Each case is written once, for a parent on `side` of the grandparent; the kernel spells out
/// both mirror images.
fn insert_color<N: RbNodes + ?Sized>(tree: &mut N, mut node: Gva) -> Result<()> {
    let mut parent = tree.rb_parent(node)?;
    // Each recoloring (Case 1) moves two levels up.
    for _ in 0..MAX_DEPTH {
        // Loop invariant: node is red.
        if parent == NULL {
            // node is the root: the first node, or Case 1 recoloured up to the root.
            return tree.rb_set_parent_color(node, NULL, RB_BLACK);
        }
        if tree.rb_is_black(parent)? {
            return Ok(());
        }
        let gparent = tree.rb_parent(parent)?;
        if gparent == NULL {
            return Err(corrupt(Corruption::RedRoot { root: parent }));
        }
        let side = if tree.right(gparent)? == parent { Dir::Right } else { Dir::Left };
        let uncle = tree.child(gparent, side.flip())?;
        if uncle != NULL && !tree.rb_is_black(uncle)? {
            // Case 1: red uncle. Flip colours and continue at the grandparent.
            tree.rb_set_parent_color(uncle, gparent, RB_BLACK)?;
            tree.rb_set_parent_color(parent, gparent, RB_BLACK)?;
            node = gparent;
            parent = tree.rb_parent(node)?;
            tree.rb_set_parent_color(node, parent, RB_RED)?;
            continue;
        }
        let mut tmp = tree.child(parent, side.flip())?;
        if node == tmp {
            // Case 2: node is the inner child. Rotate at parent so it becomes the outer one.
            tmp = tree.child(node, side)?;
            tree.set_child(parent, side.flip(), tmp)?;
            tree.set_child(node, side, parent)?;
            if tmp != NULL {
                tree.rb_set_parent_color(tmp, parent, RB_BLACK)?;
            }
            tree.rb_set_parent_color(parent, node, RB_RED)?;
            tree.augment_rotate(parent, node)?;
            parent = node;
            tmp = tree.child(node, side.flip())?;
        }
        // Case 3: node is the outer child. Rotate at the grandparent.
        tree.set_child(gparent, side, tmp)?;
        tree.set_child(parent, side.flip(), gparent)?;
        if tmp != NULL {
            tree.rb_set_parent_color(tmp, gparent, RB_BLACK)?;
        }
        tree.rb_rotate_set_parents(gparent, parent, RB_RED)?;
        return tree.augment_rotate(gparent, parent);
    }
    Err(corrupt(Corruption::Rebalancing { op: "insert", limit: MAX_DEPTH }))
}

/// `rb_erase_cached(node, tree)`, or `rb_erase_augmented_cached` for an augmented tree: removes
/// `node` (which must hang in this tree) and rebalances like `rb_erase`, calling the copy,
/// propagate and rotate callbacks where `__rb_erase_augmented` and `____rb_erase_color` do. The
/// erased node's own fields are left as they were, as the kernel does.
///
/// Returns whether `node` was the leftmost (then `rb_leftmost` now points to its successor).
pub fn erase_cached<N: RbNodes + ?Sized>(tree: &mut N, node: Gva) -> Result<bool> {
    check_node_address(node)?;
    check_in_tree(tree, node)?;
    let was_leftmost = tree.leftmost()? == node;
    if was_leftmost {
        let next = rb_next(tree, node)?;
        tree.set_leftmost(next)?;
    }
    if let Some(parent) = erase_node(tree, node)? {
        erase_color(tree, parent)?;
    }
    Ok(was_leftmost)
}

/// Fails unless `node` hangs in this tree: each parent up to the root holds it as a child.
fn check_in_tree<N: RbNodes + ?Sized>(tree: &N, node: Gva) -> Result<()> {
    let mut n = node;
    for _ in 0..=MAX_DEPTH {
        let parent = tree.rb_parent(n)?;
        if parent == NULL {
            return if tree.root()? == n { Ok(()) } else { Err(corrupt(Corruption::NotInTree { node })) };
        }
        if tree.left(parent)? != n && tree.right(parent)? != n {
            return Err(corrupt(Corruption::NotHeld { node, ancestor: n, parent }));
        }
        n = parent;
    }
    Err(corrupt(Corruption::TooManyAncestors { node, limit: MAX_DEPTH }))
}

/// `rb_next`: the in-order successor of `node`, or null.
fn rb_next<N: RbNodes + ?Sized>(tree: &N, node: Gva) -> Result<Gva> {
    let mut n = tree.right(node)?;
    if n != NULL {
        for _ in 0..MAX_DEPTH {
            let left = tree.left(n)?;
            if left == NULL {
                return Ok(n);
            }
            n = left;
        }
    } else {
        n = node;
        for _ in 0..MAX_DEPTH {
            let parent = tree.rb_parent(n)?;
            if parent == NULL || tree.right(parent)? != n {
                return Ok(parent);
            }
            n = parent;
        }
    }
    Err(corrupt(Corruption::NoSuccessor { node, limit: MAX_DEPTH }))
}

/// `__rb_erase_augmented`: unlinks `node`, propagates the augmented values from where the tree
/// changed, and returns the parent where a black height is now one short (to hand to
/// [`erase_color`]), if any.
fn erase_node<N: RbNodes + ?Sized>(tree: &mut N, node: Gva) -> Result<Option<Gva>> {
    let child = tree.right(node)?;
    let left = tree.left(node)?;
    let pc = tree.parent_color(node)?;
    let parent = parent_in(pc);
    if left == NULL {
        // Case 1: at most a right child, which is then red (and node black): it takes node's
        // place and colour. Without one, a black node leaves its parent a black short.
        tree.rb_change_child(node, child, parent)?;
        let rebalance = if child != NULL {
            tree.set_parent_color(child, pc)?;
            None
        } else {
            (pc & 1 == RB_BLACK && parent != NULL).then_some(parent)
        };
        tree.augment_propagate(parent, NULL)?;
        return Ok(rebalance);
    }
    if child == NULL {
        // Case 1 mirrored: only a left child.
        tree.set_parent_color(left, pc)?;
        tree.rb_change_child(node, left, parent)?;
        tree.augment_propagate(parent, NULL)?;
        return Ok(None);
    }
    // Two children: the successor (leftmost under the right child) takes node's place.
    let mut successor = child;
    let mut succ_parent = child;
    let mut tmp = tree.left(child)?;
    if tmp == NULL {
        // Case 2: the successor is the right child itself; it keeps its right subtree.
    } else {
        // Case 3: the successor is deeper; its right subtree moves up to its parent.
        for depth in 0.. {
            if depth >= MAX_DEPTH {
                return Err(corrupt(Corruption::NoSuccessor { node, limit: MAX_DEPTH }));
            }
            succ_parent = successor;
            successor = tmp;
            tmp = tree.left(tmp)?;
            if tmp == NULL {
                break;
            }
        }
    }
    let child2 = tree.right(successor)?;
    if successor != child {
        tree.set_left(succ_parent, child2)?;
        tree.set_right(successor, child)?;
        tree.rb_set_parent(child, successor)?;
        tree.augment_copy(node, successor)?;
        tree.augment_propagate(succ_parent, successor)?;
    } else {
        tree.augment_copy(node, successor)?;
    }
    tree.set_left(successor, left)?;
    tree.rb_set_parent(left, successor)?;
    tree.rb_change_child(node, successor, parent)?;
    let rebalance = if child2 != NULL {
        tree.rb_set_parent_color(child2, succ_parent, RB_BLACK)?;
        None
    } else {
        tree.rb_is_black(successor)?.then_some(succ_parent)
    };
    tree.set_parent_color(successor, pc)?;
    tree.augment_propagate(successor, NULL)?;
    Ok(rebalance)
}

/// `____rb_erase_color`: restores equal black heights when every path through `parent` and one
/// of its children (`node`, black or null) is one black node short.
///
/// Each case is written once, for `node` on `side` of its parent.
fn erase_color<N: RbNodes + ?Sized>(tree: &mut N, mut parent: Gva) -> Result<()> {
    let mut node = NULL;
    // Each recoloring (Case 2 with a black parent) moves one level up.
    for _ in 0..=MAX_DEPTH {
        let side = if tree.right(parent)? == node { Dir::Right } else { Dir::Left };
        let far = side.flip();
        let mut sibling = tree.child(parent, far)?;
        if !tree.rb_is_black(sibling)? {
            // Case 1: red sibling. Rotate at parent; the sibling's near child becomes the sibling.
            let near = tree.child(sibling, side)?;
            tree.set_child(parent, far, near)?;
            tree.set_child(sibling, side, parent)?;
            tree.rb_set_parent_color(near, parent, RB_BLACK)?;
            tree.rb_rotate_set_parents(parent, sibling, RB_RED)?;
            tree.augment_rotate(parent, sibling)?;
            sibling = near;
        }
        let mut far_nephew = tree.child(sibling, far)?;
        if far_nephew == NULL || tree.rb_is_black(far_nephew)? {
            let near_nephew = tree.child(sibling, side)?;
            if near_nephew == NULL || tree.rb_is_black(near_nephew)? {
                // Case 2: black sibling with black children. Paint it red; a red parent turns
                // black and ends it, a black one moves the shortage up.
                tree.rb_set_parent_color(sibling, parent, RB_RED)?;
                if !tree.rb_is_black(parent)? {
                    return tree.rb_set_black(parent);
                }
                node = parent;
                parent = tree.rb_parent(node)?;
                if parent == NULL {
                    return Ok(());
                }
                continue;
            }
            // Case 3: red near nephew. Rotate at the sibling so it becomes the far nephew.
            let inner = tree.child(near_nephew, far)?;
            tree.set_child(sibling, side, inner)?;
            tree.set_child(near_nephew, far, sibling)?;
            tree.set_child(parent, far, near_nephew)?;
            if inner != NULL {
                tree.rb_set_parent_color(inner, sibling, RB_BLACK)?;
            }
            tree.augment_rotate(sibling, near_nephew)?;
            far_nephew = sibling;
            sibling = near_nephew;
        }
        // Case 4: red far nephew. Rotate at parent; the sibling takes the parent's colour.
        let near = tree.child(sibling, side)?;
        tree.set_child(parent, far, near)?;
        tree.set_child(sibling, side, parent)?;
        tree.rb_set_parent_color(far_nephew, sibling, RB_BLACK)?;
        if near != NULL {
            tree.rb_set_parent(near, parent)?;
        }
        tree.rb_rotate_set_parents(parent, sibling, RB_BLACK)?;
        return tree.augment_rotate(parent, sibling);
    }
    Err(corrupt(Corruption::Rebalancing { op: "erase", limit: MAX_DEPTH }))
}

/// Node addresses must be non-null and aligned like `struct rb_node` (`aligned(sizeof(long))`),
/// or the colour bits would corrupt parent pointers.
fn check_node_address(node: Gva) -> Result<()> {
    if node == NULL || node.raw() & 7 != 0 {
        return Err(corrupt(Corruption::BadAddress { node }));
    }
    Ok(())
}

/// What [`check_tree`] found in a valid tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeReport {
    /// Number of nodes.
    pub count: usize,
    /// Black nodes on every path from the root to a leaf (0 for an empty tree).
    pub black_height: usize,
    /// Nodes on the longest path from the root to a leaf.
    pub height: usize,
    /// The first node in order (null for an empty tree); equals `rb_leftmost`.
    pub first: Gva,
    /// Last key minus first key: below 2^63, so that [`key_before`] orders all keys alike.
    pub key_span: u64,
}

/// Checks that `tree` is a valid `rb_root_cached` of at most `limit` nodes: the root is black
/// with a null parent; every child records its parent; no red node has a red child; every path
/// holds the same number of black nodes; keys never decrease in order (under [`key_before`]) and
/// span less than 2^63; `rb_leftmost` is the first node; no node is reached twice; the augmented
/// values the kernel keeps exact are (see [`RbNodes::augment_verify`]).
///
/// Reads at most `limit` nodes' worth of fields; garbage ends in an error, never a long walk.
pub fn check_tree<N: RbNodes + ?Sized>(tree: &N, limit: usize) -> Result<TreeReport> {
    let root = tree.root()?;
    let leftmost = tree.leftmost()?;
    let mut check = Checker { tree, limit, seen: HashSet::new(), prev: None, first: NULL, height: 0, span: 0 };
    let black_height = if root == NULL {
        0
    } else {
        if tree.parent_color(root)? != parent_color_of(NULL, RB_BLACK) {
            return Err(corrupt(Corruption::BadRoot { root }));
        }
        check.subtree(root, NULL, 1)?
    };
    if leftmost != check.first {
        return Err(corrupt(Corruption::WrongLeftmost { leftmost, first: check.first }));
    }
    let key_span = u64::try_from(check.span).map_err(|_| corrupt(Corruption::KeySpanOverflow))?;
    Ok(TreeReport { count: check.seen.len(), black_height, height: check.height, first: check.first, key_span })
}

/// The state of one [`check_tree`].
struct Checker<'a, N: ?Sized> {
    tree: &'a N,
    limit: usize,
    seen: HashSet<Gva>,
    /// The previous node in order and its key.
    prev: Option<(Gva, u64)>,
    first: Gva,
    height: usize,
    /// Sum of the differences between neighbouring keys so far.
    span: u128,
}

impl<N: RbNodes + ?Sized> Checker<'_, N> {
    /// Checks the subtree at `node` (not null), hanging under `parent` at `depth`; returns its
    /// black height.
    fn subtree(&mut self, node: Gva, parent: Gva, depth: usize) -> Result<usize> {
        check_node_address(node)?;
        if depth > MAX_DEPTH {
            return Err(corrupt(Corruption::TooDeep { limit: MAX_DEPTH }));
        }
        if !self.seen.insert(node) {
            return Err(corrupt(Corruption::Twice { node }));
        }
        if self.seen.len() > self.limit {
            return Err(corrupt(Corruption::TooMany { limit: self.limit }));
        }
        self.height = self.height.max(depth);
        let pc = self.tree.parent_color(node)?;
        if parent_in(pc) != parent {
            return Err(corrupt(Corruption::WrongParent { node, recorded: parent_in(pc), parent }));
        }
        if pc & 2 != 0 {
            return Err(corrupt(Corruption::ParentColorBit1 { node, parent_color: pc }));
        }
        let black = pc & 1 == RB_BLACK;
        let left = self.tree.left(node)?;
        let right = self.tree.right(node)?;
        for child in [left, right] {
            if !black && child != NULL && !self.tree.rb_is_black(child)? {
                return Err(corrupt(Corruption::RedRed { node, child }));
            }
        }
        self.tree.augment_verify(node)?;
        let left_height = if left == NULL { 0 } else { self.subtree(left, node, depth + 1)? };
        let key = self.tree.key(node)?;
        match self.prev {
            None => self.first = node,
            Some((prev, prev_key)) if key_before(key, prev_key) => {
                return Err(corrupt(Corruption::OutOfOrder { node, key, prev, prev_key }));
            }
            Some((_, prev_key)) => {
                self.span += u128::from(key.wrapping_sub(prev_key));
                if self.span >= 1 << 63 {
                    return Err(corrupt(Corruption::KeySpan { node }));
                }
            }
        }
        self.prev = Some((node, key));
        let right_height = if right == NULL { 0 } else { self.subtree(right, node, depth + 1)? };
        if left_height != right_height {
            return Err(corrupt(Corruption::BlackHeight { node, left: left_height, right: right_height }));
        }
        Ok(left_height + usize::from(black))
    }
}

/// Where an entry's sort key lies relative to its `rb_node`: both as offsets in the entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RbKeyLayout {
    /// Offset of the `rb_node` in the entry (`sched_entity.run_node`).
    pub node: u64,
    /// Offset of the `u64` key in the entry (`sched_entity.vruntime`).
    pub key: u64,
}

impl RbKeyLayout {
    /// A fair runqueue's timeline: nodes at `sched_entity.run_node`, keyed by the flavour's
    /// [`Flavour::timeline_key`] (`vruntime` in CFS, `deadline` in EEVDF).
    pub fn timeline(profile: &Profile, flavour: Flavour) -> Result<Self, LinuxError> {
        Ok(Self {
            node: profile.offset("sched_entity", "run_node")?,
            key: profile.offset("sched_entity", flavour.timeline_key())?,
        })
    }

    /// The address of the field at `offset` in the entry whose node is at `node`.
    fn entry_field(&self, node: Gva, offset: u64) -> Result<Gva> {
        node.raw()
            .checked_sub(self.node)
            .and_then(|entry| entry.checked_add(offset))
            .map(Gva)
            .ok_or_else(|| corrupt(Corruption::NoEntry { node, offset: self.node }))
    }

    /// The key's address for the node at `node`.
    fn key_at(&self, node: Gva) -> Result<Gva> {
        self.entry_field(node, self.key)
    }
}

/// EEVDF's augmentation of the timeline (`min_vruntime_cb`, kernel/sched/fair.c of 6.12): each
/// entity holds the smallest `vruntime` and the smallest `slice` of its subtree. Offsets are in
/// the entity.
///
/// As in the kernel, `RB_DECLARE_CALLBACKS(.., min_vruntime, min_vruntime_update)` copies only
/// `min_vruntime` on a rotation and recomputes the old node's both values; the new node's
/// `min_slice` is not recomputed there, so the kernel keeps `min_vruntime` exact and `min_slice`
/// only as exact as that allows. xsched does exactly the same, and checks only `min_vruntime`.
///
/// Linux 7.3 keeps `max_slice` too and declares the callbacks with its own copy
/// (`RB_DECLARE_CALLBACKS_MULTI(.., min_vruntime_copy, min_vruntime_update)`), which copies all
/// three values on a rotation: there every value is exact, and xsched checks all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinVruntimeAugment {
    /// `sched_entity.vruntime`.
    pub vruntime: u64,
    /// `sched_entity.min_vruntime`.
    pub min_vruntime: u64,
    /// `sched_entity.slice`.
    pub slice: u64,
    /// `sched_entity.min_slice`.
    pub min_slice: u64,
    /// `sched_entity.max_slice` where the kernel keeps it (7.3), with every value copied on a
    /// rotation.
    pub max_slice: Option<u64>,
}

impl MinVruntimeAugment {
    /// The offsets from an EEVDF kernel's profile (`max_slice` when it has one).
    pub fn from_profile(profile: &Profile) -> Result<Self, LinuxError> {
        let se = |f: &str| profile.offset("sched_entity", f);
        let max_slice = profile.structs.get("sched_entity").and_then(|s| s.fields.get("max_slice")).map(|f| f.offset);
        Ok(Self { vruntime: se("vruntime")?, min_vruntime: se("min_vruntime")?, slice: se("slice")?, min_slice: se("min_slice")?, max_slice })
    }
}

/// `vruntime_gt`: `(s64)(a - b) > 0`.
fn vruntime_gt(a: u64, b: u64) -> bool {
    key_before(b, a)
}

/// An `rb_root_cached` in guest kernel-virtual memory, read and written in place.
///
/// Every write goes straight to `mem`: give it a write overlay to make a change all-or-nothing.
#[derive(Debug)]
pub struct GuestRbTree<'a, K: ?Sized> {
    mem: &'a mut K,
    layout: RbNodeLayout,
    key: RbKeyLayout,
    augment: Option<MinVruntimeAugment>,
    /// Address of `rb_root_cached.rb_root.rb_node`.
    root_at: Gva,
    /// Address of `rb_root_cached.rb_leftmost`.
    leftmost_at: Gva,
}

impl<'a, K: KernelMemoryMut + ?Sized> GuestRbTree<'a, K> {
    /// The tree whose `rb_root.rb_node` is at `root_at` and `rb_leftmost` at `leftmost_at`,
    /// augmented when `augment` is given.
    pub fn new(mem: &'a mut K, layout: RbNodeLayout, key: RbKeyLayout, augment: Option<MinVruntimeAugment>, root_at: Gva, leftmost_at: Gva) -> Self {
        Self { mem, layout, key, augment, root_at, leftmost_at }
    }

    /// `cfs_rq.tasks_timeline` of the `cfs_rq` at `cfs_rq`, as `flavour` orders and augments it.
    pub fn timeline(mem: &'a mut K, profile: &Profile, flavour: Flavour, cfs_rq: Gva) -> Result<Self> {
        let at = |field: &str| -> Result<Gva> {
            let offset = profile.offset("cfs_rq", field).map_err(LinuxError::from)?;
            Ok(crate::linux::walk::add(cfs_rq, offset)?)
        };
        let (root_at, leftmost_at) = (at("tasks_timeline.rb_root.rb_node")?, at("tasks_timeline.rb_leftmost")?);
        let augment = match flavour {
            Flavour::Cfs => None,
            Flavour::Eevdf | Flavour::EevdfFlat => Some(MinVruntimeAugment::from_profile(profile)?),
        };
        Ok(Self::new(mem, RbNodeLayout::from_profile(profile)?, RbKeyLayout::timeline(profile, flavour)?, augment, root_at, leftmost_at))
    }

    /// The address of field `offset` of node `n`, refusing the null node.
    fn field(&self, n: Gva, offset: u64) -> Result<Gva> {
        if n == NULL {
            return Err(corrupt(Corruption::Null("dereference")));
        }
        Ok(crate::linux::walk::add(n, offset)?)
    }

    /// The `u64` at `offset` in the entry of node `n`.
    fn entry_u64(&self, n: Gva, offset: u64) -> Result<u64> {
        if n == NULL {
            return Err(corrupt(Corruption::Null("entry")));
        }
        Ok(self.mem.read_u64(self.key.entry_field(n, offset)?)?)
    }

    /// Sets the `u64` at `offset` in the entry of node `n`.
    fn set_entry_u64(&mut self, n: Gva, offset: u64, value: u64) -> Result<()> {
        let at = self.key.entry_field(n, offset)?;
        Ok(self.mem.write_u64(at, value)?)
    }

    /// `min_vruntime_update(se, exit)`: recomputes `n`'s `min_vruntime`, `min_slice` (and
    /// `max_slice`) from its own values and its children's; says whether all came out unchanged.
    fn min_vruntime_update(&mut self, a: MinVruntimeAugment, n: Gva) -> Result<bool> {
        let old = self.subtree_values(a, n)?;
        let new = self.computed_values(a, n)?;
        self.set_entry_u64(n, a.min_vruntime, new.0)?;
        self.set_entry_u64(n, a.min_slice, new.1)?;
        if let (Some(at), Some(max)) = (a.max_slice, new.2) {
            self.set_entry_u64(n, at, max)?;
        }
        Ok(new == old)
    }

    /// `n`'s stored `(min_vruntime, min_slice, max_slice)`.
    fn subtree_values(&self, a: MinVruntimeAugment, n: Gva) -> Result<(u64, u64, Option<u64>)> {
        let max = a.max_slice.map(|at| self.entry_u64(n, at)).transpose()?;
        Ok((self.entry_u64(n, a.min_vruntime)?, self.entry_u64(n, a.min_slice)?, max))
    }

    /// `n`'s `(min_vruntime, min_slice, max_slice)` as computed from its own values and its
    /// children's stored ones.
    fn computed_values(&self, a: MinVruntimeAugment, n: Gva) -> Result<(u64, u64, Option<u64>)> {
        let slice = self.entry_u64(n, a.slice)?;
        let (mut min_vruntime, mut min_slice, mut max_slice) = (self.entry_u64(n, a.vruntime)?, slice, a.max_slice.map(|_| slice));
        for child in [self.right(n)?, self.left(n)?].into_iter().filter(|&c| c != NULL) {
            let (child_min, child_min_slice, child_max_slice) = self.subtree_values(a, child)?;
            if vruntime_gt(min_vruntime, child_min) {
                min_vruntime = child_min;
            }
            min_slice = min_slice.min(child_min_slice);
            max_slice = max_slice.zip(child_max_slice).map(|(m, c)| m.max(c));
        }
        Ok((min_vruntime, min_slice, max_slice))
    }

    /// `min_vruntime_copy(new, old)`: `new` takes `old`'s `min_vruntime`, and its `min_slice`
    /// and `max_slice` where the kernel copies those (see [`MinVruntimeAugment`]).
    fn copy_values(&mut self, a: MinVruntimeAugment, old: Gva, new: Gva) -> Result<()> {
        let (min_vruntime, min_slice, max_slice) = self.subtree_values(a, old)?;
        self.set_entry_u64(new, a.min_vruntime, min_vruntime)?;
        if let (Some(at), Some(max)) = (a.max_slice, max_slice) {
            self.set_entry_u64(new, a.min_slice, min_slice)?;
            self.set_entry_u64(new, at, max)?;
        }
        Ok(())
    }
}

impl<K: KernelMemoryMut + ?Sized> RbNodes for GuestRbTree<'_, K> {
    fn parent_color(&self, n: Gva) -> Result<u64> {
        Ok(self.mem.read_u64(self.field(n, self.layout.parent_color)?)?)
    }
    fn left(&self, n: Gva) -> Result<Gva> {
        Ok(self.mem.read_ptr(self.field(n, self.layout.left)?)?)
    }
    fn right(&self, n: Gva) -> Result<Gva> {
        Ok(self.mem.read_ptr(self.field(n, self.layout.right)?)?)
    }
    fn key(&self, n: Gva) -> Result<u64> {
        if n == NULL {
            return Err(corrupt(Corruption::Null("key")));
        }
        Ok(self.mem.read_u64(self.key.key_at(n)?)?)
    }
    fn set_parent_color(&mut self, n: Gva, value: u64) -> Result<()> {
        let at = self.field(n, self.layout.parent_color)?;
        Ok(self.mem.write_u64(at, value)?)
    }
    fn set_left(&mut self, n: Gva, child: Gva) -> Result<()> {
        let at = self.field(n, self.layout.left)?;
        Ok(self.mem.write_u64(at, child.raw())?)
    }
    fn set_right(&mut self, n: Gva, child: Gva) -> Result<()> {
        let at = self.field(n, self.layout.right)?;
        Ok(self.mem.write_u64(at, child.raw())?)
    }
    fn root(&self) -> Result<Gva> {
        Ok(self.mem.read_ptr(self.root_at)?)
    }
    fn set_root(&mut self, n: Gva) -> Result<()> {
        Ok(self.mem.write_u64(self.root_at, n.raw())?)
    }
    fn leftmost(&self) -> Result<Gva> {
        Ok(self.mem.read_ptr(self.leftmost_at)?)
    }
    fn set_leftmost(&mut self, n: Gva) -> Result<()> {
        Ok(self.mem.write_u64(self.leftmost_at, n.raw())?)
    }
    /// `min_vruntime_cb_propagate(n, stop)`.
    fn augment_propagate(&mut self, mut n: Gva, stop: Gva) -> Result<()> {
        let Some(a) = self.augment else { return Ok(()) };
        for _ in 0..=MAX_DEPTH {
            if n == stop || n == NULL || self.min_vruntime_update(a, n)? {
                return Ok(());
            }
            n = self.rb_parent(n)?;
        }
        Err(corrupt(Corruption::Propagation { limit: MAX_DEPTH }))
    }
    /// `min_vruntime_cb_copy(old, new)`: see [`MinVruntimeAugment`] for what is copied.
    fn augment_copy(&mut self, old: Gva, new: Gva) -> Result<()> {
        let Some(a) = self.augment else { return Ok(()) };
        self.copy_values(a, old, new)
    }
    /// `min_vruntime_cb_rotate(old, new)`: `new` takes `old`'s values (see
    /// [`MinVruntimeAugment`]), `old` is recomputed.
    fn augment_rotate(&mut self, old: Gva, new: Gva) -> Result<()> {
        let Some(a) = self.augment else { return Ok(()) };
        self.copy_values(a, old, new)?;
        self.min_vruntime_update(a, old).map(|_| ())
    }
    /// `min_vruntime` is the smallest `vruntime` of the subtree (`vruntime_gt` order); where the
    /// kernel keeps them exact (7.3), `min_slice` and `max_slice` are the subtree's smallest and
    /// largest `slice`.
    fn augment_verify(&self, n: Gva) -> Result<()> {
        let Some(a) = self.augment else { return Ok(()) };
        let expected = self.computed_values(a, n)?;
        let found = self.subtree_values(a, n)?;
        if found.0 != expected.0 {
            return Err(corrupt(Corruption::MinVruntime { node: n, found: found.0, expected: expected.0 }));
        }
        if a.max_slice.is_some() && (found.1, found.2) != (expected.1, expected.2) {
            return Err(corrupt(Corruption::Slices { node: n, found: (found.1, found.2), expected: (expected.1, expected.2) }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::virt::{DirectMapped, KernelMemory};
    use crate::linux::walk::rb_for_each;
    use crate::memory::{Gpa, GuestMemory, ImageMemory};

    /// An in-memory store: node fields and keys of arena nodes [`va`]`(i)`, indexed by `i`.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    struct Arena {
        /// `[__rb_parent_color, rb_left, rb_right]` per node.
        nodes: Vec<Option<[u64; 3]>>,
        keys: Vec<Option<u64>>,
        root: Gva,
        leftmost: Gva,
    }

    impl Arena {
        /// The index of arena node `n`, if it is one.
        fn index(n: Gva) -> Option<usize> {
            let offset = n.checked_offset_from(ARENA)?;
            (offset % 0x40 == 0).then(|| usize::try_from(offset / 0x40).ok()).flatten()
        }
        fn slot(&mut self, n: Gva) -> &mut Option<[u64; 3]> {
            let i = Self::index(n).expect("arena node");
            if self.nodes.len() <= i {
                self.nodes.resize(i + 1, None);
                self.keys.resize(i + 1, None);
            }
            &mut self.nodes[i]
        }
        fn insert(&mut self, n: Gva, fields: [u64; 3]) {
            *self.slot(n) = Some(fields);
        }
        fn fields_mut(&mut self, n: Gva) -> &mut [u64; 3] {
            self.slot(n).as_mut().expect("node")
        }
        fn set_key(&mut self, n: Gva, key: u64) {
            self.slot(n);
            let i = Self::index(n).expect("arena node");
            self.keys[i] = Some(key);
        }
        fn get(&self, n: Gva, i: usize) -> Result<u64> {
            Self::index(n)
                .and_then(|at| self.nodes.get(at).copied().flatten())
                .map(|f| f[i])
                .ok_or_else(|| RbTreeError::Memory(LinuxError::Walk(format!("no node at {n}"))))
        }
        fn set(&mut self, n: Gva, i: usize, v: u64) -> Result<()> {
            let f = Self::index(n)
                .and_then(|at| self.nodes.get_mut(at))
                .and_then(Option::as_mut)
                .ok_or_else(|| RbTreeError::Memory(LinuxError::Walk(format!("no node at {n}"))))?;
            f[i] = v;
            Ok(())
        }
    }

    impl RbNodes for Arena {
        fn parent_color(&self, n: Gva) -> Result<u64> {
            self.get(n, 0)
        }
        fn left(&self, n: Gva) -> Result<Gva> {
            self.get(n, 1).map(Gva)
        }
        fn right(&self, n: Gva) -> Result<Gva> {
            self.get(n, 2).map(Gva)
        }
        fn key(&self, n: Gva) -> Result<u64> {
            Self::index(n)
                .and_then(|at| self.keys.get(at).copied().flatten())
                .ok_or_else(|| RbTreeError::Memory(LinuxError::Walk(format!("no key for {n}"))))
        }
        fn set_parent_color(&mut self, n: Gva, v: u64) -> Result<()> {
            self.set(n, 0, v)
        }
        fn set_left(&mut self, n: Gva, c: Gva) -> Result<()> {
            self.set(n, 1, c.raw())
        }
        fn set_right(&mut self, n: Gva, c: Gva) -> Result<()> {
            self.set(n, 2, c.raw())
        }
        fn root(&self) -> Result<Gva> {
            Ok(self.root)
        }
        fn set_root(&mut self, n: Gva) -> Result<()> {
            self.root = n;
            Ok(())
        }
        fn leftmost(&self) -> Result<Gva> {
            Ok(self.leftmost)
        }
        fn set_leftmost(&mut self, n: Gva) -> Result<()> {
            self.leftmost = n;
            Ok(())
        }
    }

    /// Where arena nodes lie, 0x40 bytes apart.
    const ARENA: Gva = Gva(0xffff_8880_0001_0000);

    /// Arena node `i` (0 is null).
    fn va(i: usize) -> Gva {
        if i == 0 {
            NULL
        } else {
            Gva(ARENA.raw() + 0x40 * i as u64)
        }
    }

    /// splitmix64: a few lines of seeded randomness.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).expect("small")
        }
    }

    /// A key drawn so that all keys of one run lie within 2^62 of each other (so that
    /// `key_before` orders them totally): few distinct values, across the u64 wrap, spread wide,
    /// or close together anywhere.
    fn draw_key(mode: u64, base: u64, rng: &mut Rng) -> u64 {
        match mode {
            0 => rng.next() % 8,
            1 => (u64::MAX - 15).wrapping_add(rng.next() % 32),
            2 => base.wrapping_add(rng.next() >> 2),
            _ => base.wrapping_add(rng.next() % 64),
        }
    }

    /// The nodes in order, by plain recursion (independent of the code under test).
    fn in_order<N: RbNodes + ?Sized>(tree: &N) -> Vec<Gva> {
        fn go<N: RbNodes + ?Sized>(tree: &N, n: Gva, out: &mut Vec<Gva>) {
            if n != NULL {
                go(tree, tree.left(n).expect("left"), out);
                out.push(n);
                go(tree, tree.right(n).expect("right"), out);
            }
        }
        let mut out = Vec::new();
        go(tree, tree.root().expect("root"), &mut out);
        out
    }

    /// A seeded run of inserts and erases over `count` nodes (`node(i)`, with stale fields),
    /// re-keying each node before it is (re)inserted, checked after every step against a
    /// reference order: sorted by key, equal keys in insertion order.
    fn random_run<N: RbNodes>(
        tree: &mut N,
        seed: u64,
        node: impl Fn(usize) -> Gva,
        set_key: impl Fn(&mut N, Gva, u64),
        also: impl Fn(&N, &[Gva]),
    ) {
        let mut rng = Rng(seed);
        let (mode, base) = (seed % 4, rng.next());
        let count = 1 + rng.below(48);
        let mut order: Vec<Gva> = Vec::new();
        let mut outside: Vec<Gva> = (1..=count).map(&node).collect();
        for _ in 0..3 * count {
            if order.is_empty() || (!outside.is_empty() && rng.below(3) != 0) {
                let n = outside.swap_remove(rng.below(outside.len()));
                let key = draw_key(mode, base, &mut rng);
                set_key(tree, n, key);
                let at = order.partition_point(|&e| !key_before(key, tree.key(e).expect("key")));
                order.insert(at, n);
                let leftmost = insert_cached(tree, n).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                assert_eq!(leftmost, at == 0, "seed {seed}: insert of {n} at {at}");
            } else {
                let at = rng.below(order.len());
                let n = order.remove(at);
                outside.push(n);
                let was_leftmost = erase_cached(tree, n).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                assert_eq!(was_leftmost, at == 0, "seed {seed}: erase of {n} at {at}");
            }
            let report = check_tree(tree, 1000).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert_eq!(report.count, order.len(), "seed {seed}");
            assert_eq!(in_order(tree), order, "seed {seed}");
            assert_eq!(report.first, order.first().copied().unwrap_or(NULL));
            assert!(report.height as f64 <= 2.0 * ((order.len() + 1) as f64).log2(), "seed {seed}: {report:?}");
            also(tree, &order);
        }
    }

    /// An arena whose nodes `1..=count` hold stale fields, as a parked entity's would.
    fn stale_arena(count: usize) -> Arena {
        let mut a = Arena::default();
        for i in 1..=count {
            a.insert(va(i), [0xdead_0000 + i as u64, 0xbad0, 0xbad8]);
        }
        a
    }

    #[test]
    fn random_inserts_and_erases_keep_order_and_invariants() {
        let set_key = |a: &mut Arena, n: Gva, k: u64| a.set_key(n, k);
        for seed in 0..3000 {
            random_run(&mut stale_arena(48), seed, va, set_key, |_, _| ());
        }
    }

    /// The real 6.1 layout: a `cfs_rq` at physical 0 and `sched_entity`s from 0x1000.
    fn cfs_image() -> (DirectMapped<ImageMemory>, Profile) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/6.1.0-56-cloud-amd64.json");
        let profile = Profile::load(&path).expect("profile");
        (DirectMapped::new(ImageMemory::zeroed(0x1000 + 64 * 0x100), BASE), profile)
    }

    const BASE: Gva = Gva(0xffff_8880_0000_0000);

    #[test]
    fn random_runs_on_guest_memory_with_the_real_layout() {
        let (mut img, profile) = cfs_image();
        let run_node = profile.offset("sched_entity", "run_node").expect("run_node");
        let layout = RbNodeLayout::from_profile(&profile).expect("layout");
        let node = |i: usize| img.va(Gpa(0x1000 + 0x100 * i as u64 + run_node));
        let nodes: Vec<Gva> = (0..=64).map(node).collect();
        for seed in 0..300 {
            img.memory_mut().write_phys(Gpa(0), &[0xa5; 0x1000 + 64 * 0x100]).expect("stale fill");
            let mut tree = GuestRbTree::timeline(&mut img, &profile, Flavour::Cfs, BASE).expect("tree");
            tree.set_root(NULL).expect("root");
            tree.set_leftmost(NULL).expect("leftmost");
            let set_key = |t: &mut GuestRbTree<'_, DirectMapped<ImageMemory>>, n: Gva, k: u64| {
                let at = t.key.key_at(n).expect("key address");
                t.mem.write_u64(at, k).expect("key write");
            };
            // The read-side walker agrees with the reference order.
            let walk = |t: &GuestRbTree<'_, DirectMapped<ImageMemory>>, order: &[Gva]| {
                let walked: Vec<Gva> = rb_for_each(&*t.mem, layout, t.root().expect("root"), 1000)
                    .collect::<Result<_, _>>()
                    .expect("walk");
                assert_eq!(walked, order);
            };
            random_run(&mut tree, seed, |i| nodes[i], set_key, walk);
        }
    }

    /// EEVDF's augmented timeline on the real 6.12 layout: after every insert and erase (keyed
    /// by deadline, random vruntimes and slices) every node's `min_vruntime` is its subtree's
    /// smallest `vruntime`, recomputed here by brute force, and the tree checks.
    #[test]
    fn augmented_inserts_and_erases_keep_every_subtree_minimum() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/6.12.117+deb12-cloud-amd64.json");
        let profile = Profile::load(&path).expect("profile");
        let se = |f: &str| profile.offset("sched_entity", f).expect("field");
        let stride = profile.struct_layout("sched_entity").expect("se").size.next_multiple_of(64);
        let span = 0x1000 + 48 * usize::try_from(stride).expect("small");
        let mut img = DirectMapped::new(ImageMemory::zeroed(span), BASE);
        let entity = |img: &DirectMapped<ImageMemory>, i: u64| img.va(Gpa(0x1000 + stride * i));
        let node_of = |e: Gva| e.checked_add(se("run_node")).expect("va");
        for seed in 0..200 {
            let mut rng = Rng(seed);
            img.memory_mut().write_phys(Gpa(0), &vec![0x5a; span]).expect("stale fill");
            let base = rng.next();
            let count = 1 + rng.below(47) as u64;
            let mut outside: Vec<Gva> = (0..count).map(|i| entity(&img, i)).collect();
            let mut inside: Vec<Gva> = Vec::new();
            let mut tree = GuestRbTree::timeline(&mut img, &profile, Flavour::Eevdf, BASE).expect("tree");
            tree.set_root(NULL).expect("root");
            tree.set_leftmost(NULL).expect("leftmost");
            for _ in 0..3 * count {
                if inside.is_empty() || (!outside.is_empty() && rng.below(3) != 0) {
                    let e = outside.swap_remove(rng.below(outside.len()));
                    let vruntime = base.wrapping_add(rng.below(1 << 30) as u64).wrapping_sub(1 << 29);
                    let deadline = vruntime.wrapping_add(rng.below(1 << 24) as u64);
                    let slice = 100_000 + rng.below(3_000_000) as u64;
                    for (field, value) in [("vruntime", vruntime), ("deadline", deadline), ("slice", slice), ("min_vruntime", vruntime), ("min_slice", slice)] {
                        tree.mem.write_u64(e.checked_add(se(field)).expect("va"), value).expect("write");
                    }
                    insert_cached(&mut tree, node_of(e)).unwrap_or_else(|err| panic!("seed {seed}: {err}"));
                    inside.push(e);
                } else {
                    let e = inside.swap_remove(rng.below(inside.len()));
                    erase_cached(&mut tree, node_of(e)).unwrap_or_else(|err| panic!("seed {seed}: {err}"));
                    outside.push(e);
                }
                let report = check_tree(&tree, 1000).unwrap_or_else(|err| panic!("seed {seed}: {err}"));
                assert_eq!(report.count, inside.len(), "seed {seed}");
                // Brute force: each node's subtree minimum.
                for &e in &inside {
                    let mut subtree = vec![node_of(e)];
                    let mut k = 0;
                    while k < subtree.len() {
                        let at = subtree[k];
                        subtree.extend([tree.left(at).expect("left"), tree.right(at).expect("right")].into_iter().filter(|&c| c != NULL));
                        k += 1;
                    }
                    let expected = subtree
                        .iter()
                        .map(|&m| tree.mem.read_u64(Gva(m.raw() - se("run_node") + se("vruntime"))).expect("vruntime"))
                        .reduce(|a, b| if key_before(b, a) { b } else { a })
                        .expect("non-empty");
                    assert_eq!(tree.mem.read_u64(e.checked_add(se("min_vruntime")).expect("va")).expect("min"), expected, "seed {seed}");
                }
            }
        }
    }

    #[test]
    fn guest_tree_writes_the_profiles_fields() {
        let (mut img, profile) = cfs_image();
        let entity = img.va(Gpa(0x1000));
        let node = entity.checked_add(profile.offset("sched_entity", "run_node").expect("run_node")).expect("va");
        let vruntime = entity.checked_add(profile.offset("sched_entity", "vruntime").expect("vruntime")).expect("va");
        img.write_u64(vruntime, 1234).expect("key");
        let mut tree = GuestRbTree::timeline(&mut img, &profile, Flavour::Cfs, BASE).expect("tree");
        assert_eq!(tree.key(node).expect("key"), 1234);
        assert!(insert_cached(&mut tree, node).expect("insert"));
        let at = |field: &str| BASE.checked_add(profile.offset("cfs_rq", field).expect("field")).expect("va");
        assert_eq!(img.read_ptr(at("tasks_timeline.rb_root.rb_node")).expect("root"), node);
        assert_eq!(img.read_ptr(at("tasks_timeline.rb_leftmost")).expect("leftmost"), node);
        // A black root: parent null, colour bit set.
        assert_eq!(img.read_u64(node).expect("parent_color"), RB_BLACK);
    }

    #[test]
    fn equal_keys_go_after_existing_ones() {
        let mut a = stale_arena(5);
        for i in 1..=5 {
            a.set_key(va(i), 7);
            assert_eq!(insert_cached(&mut a, va(i)).expect("insert"), i == 1);
        }
        assert_eq!(in_order(&a), (1..=5).map(va).collect::<Vec<_>>());
        // Across the wrap: u64::MAX sorts before 0, and 5 after both.
        let mut a = stale_arena(3);
        for (i, k) in [(1, 0), (2, 5), (3, u64::MAX)] {
            a.set_key(va(i), k);
            insert_cached(&mut a, va(i)).expect("insert");
        }
        assert_eq!(in_order(&a), vec![va(3), va(1), va(2)]);
        assert_eq!(a.leftmost, va(3));
    }

    /// Sets arena node `n`: parent, black or red, children (0 = null), key `10 * n`.
    fn put(a: &mut Arena, n: usize, parent: usize, black: bool, left: usize, right: usize) {
        let color = if black { RB_BLACK } else { RB_RED };
        a.insert(va(n), [parent_color_of(va(parent), color), va(left).raw(), va(right).raw()]);
        a.set_key(va(n), 10 * n as u64);
    }

    ///       2B
    ///      /  \
    ///     1B   4r
    ///         /  \
    ///        3B   5B
    fn sample() -> Arena {
        let mut a = Arena::default();
        put(&mut a, 2, 0, true, 1, 4);
        put(&mut a, 1, 2, true, 0, 0);
        put(&mut a, 4, 2, false, 3, 5);
        put(&mut a, 3, 4, true, 0, 0);
        put(&mut a, 5, 4, true, 0, 0);
        a.root = va(2);
        a.leftmost = va(1);
        a
    }

    fn rejects(a: &Arena, limit: usize, what: &str) {
        match check_tree(a, limit) {
            Err(e) => assert!(e.to_string().contains(what), "expected {what:?}, got {e}"),
            Ok(r) => panic!("accepted a broken tree ({what}): {r:?}"),
        }
    }

    #[test]
    fn check_tree_accepts_valid_trees() {
        let report = check_tree(&sample(), 5).expect("valid");
        assert_eq!(report, TreeReport { count: 5, black_height: 2, height: 3, first: va(1), key_span: 40 });
        let empty = Arena::default();
        assert_eq!(check_tree(&empty, 0).expect("empty").count, 0);
    }

    #[test]
    fn check_tree_rejects_broken_trees() {
        // Red node with a red child (black heights still equal).
        let mut a = Arena::default();
        put(&mut a, 3, 0, true, 2, 0);
        put(&mut a, 2, 3, false, 1, 0);
        put(&mut a, 1, 2, false, 0, 0);
        (a.root, a.leftmost) = (va(3), va(1));
        rejects(&a, 10, "red child");

        let mut a = sample();
        put(&mut a, 1, 2, false, 0, 0);
        rejects(&a, 10, "black height");

        let mut a = sample();
        put(&mut a, 3, 5, true, 0, 0);
        rejects(&a, 10, "records parent");

        let mut a = sample();
        a.leftmost = va(2);
        rejects(&a, 10, "rb_leftmost");
        a.leftmost = NULL;
        rejects(&a, 10, "rb_leftmost");
        let empty = Arena { leftmost: va(1), ..Arena::default() };
        rejects(&empty, 10, "rb_leftmost");

        // Cycles: back to the root (its parent is null), to itself, and one child twice.
        let mut a = sample();
        put(&mut a, 5, 4, true, 0, 2);
        rejects(&a, 10, "reached twice");
        put(&mut a, 5, 4, true, 5, 0);
        rejects(&a, 10, "reached twice");
        let mut a = sample();
        put(&mut a, 4, 2, false, 3, 3);
        rejects(&a, 10, "reached twice");

        let mut a = sample();
        a.set_key(va(3), 50);
        a.set_key(va(5), 30);
        rejects(&a, 10, "follows");
        // Each step forward under the signed comparison, but all around the u64 circle.
        let mut a = sample();
        for (i, k) in [(1, 0), (2, 1 << 62), (3, 1 << 63), (4, 3 << 62), (5, 0)] {
            a.set_key(va(i), k);
        }
        rejects(&a, 10, "span");
        a.set_key(va(2), 1 << 60);
        a.set_key(va(3), 1 << 61);
        a.set_key(va(4), 1 << 62);
        a.set_key(va(5), (1 << 63) - 1);
        assert_eq!(check_tree(&a, 10).expect("span just below 2^63").key_span, (1 << 63) - 1);

        let mut a = sample();
        put(&mut a, 2, 0, false, 1, 4);
        rejects(&a, 10, "root");
        put(&mut a, 2, 7, true, 1, 4);
        rejects(&a, 10, "root");

        rejects(&sample(), 4, "more than 4");

        // Garbage pointers: nowhere, misaligned, colour bit 1.
        let mut a = sample();
        put(&mut a, 5, 4, true, 0, 99);
        rejects(&a, 10, "no node");
        put(&mut a, 5, 4, true, 0, 0);
        a.fields_mut(va(5))[2] = va(1).raw() + 4;
        rejects(&a, 10, "not a valid rb_node address");
        let mut a = sample();
        a.fields_mut(va(5))[0] |= 2;
        rejects(&a, 10, "bit 1");
    }

    #[test]
    fn check_tree_bounds_a_long_chain() {
        // A 10,000-node left spine with consistent parents: too deep long before it ends.
        let mut a = Arena::default();
        for i in 1..10_000 {
            put(&mut a, i, i + 1, true, i - 1, 0);
        }
        put(&mut a, 10_000, 0, true, 9_999, 0);
        a.root = va(10_000);
        a.leftmost = va(1);
        rejects(&a, 100_000, "deeper than");
    }

    #[test]
    fn misuse_is_refused_before_any_write() {
        let mut a = sample();
        put(&mut a, 6, 0, true, 0, 0);
        let before = a.clone();
        // Already in the tree, not in the tree, null, misaligned.
        assert!(insert_cached(&mut a, va(5)).is_err());
        assert!(erase_cached(&mut a, va(6)).is_err());
        assert!(insert_cached(&mut a, NULL).is_err());
        assert!(erase_cached(&mut a, Gva(va(3).raw() + 4)).is_err());
        assert_eq!(a, before);
    }
}
