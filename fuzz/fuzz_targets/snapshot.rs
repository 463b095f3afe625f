//! Fuzzes `SnapshotReader::read` over a synthetic guest: the input is a list of 8-byte word
//! overwrites of the clean image's fields (raw values, or pointers to other fields and objects);
//! every read must end, without a panic. The image is built once and restored after each input.

#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use xsched::linux::snapshot::SnapshotReader;
use xsched::linux::synthetic::{self, GuestSpec, SyntheticGuest};
use xsched::memory::Gva;

struct Target {
    guest: SyntheticGuest,
    reader: SnapshotReader,
}

fn target() -> &'static Mutex<Target> {
    static TARGET: OnceLock<Mutex<Target>> = OnceLock::new();
    TARGET.get_or_init(|| {
        let profile = synthetic::lab_profile().expect("committed profile");
        let guest = synthetic::build(&profile, &GuestSpec::typical(60, 2, 1)).expect("build");
        let reader = guest.reader(&profile).expect("reader");
        Mutex::new(Target { guest, reader })
    })
}

fuzz_target!(|data: &[u8]| {
    let mut t = target().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let Target { guest, reader } = &mut *t;
    let (fields, objects) = (guest.truth.fields.len() as u64, guest.truth.objects.len() as u64);
    let mut undo = Vec::new();
    // Each record: a field index (2 bytes), a mode (1 byte), a value (8 bytes).
    for record in data.chunks_exact(11).take(16) {
        let index = u64::from(u16::from_le_bytes([record[0], record[1]])) % fields;
        let value = u64::from_le_bytes(record[3..11].try_into().unwrap_or_default());
        let va = Gva(guest.truth.fields[index as usize].raw() & !7);
        let new = match record[2] % 4 {
            0 => value,
            1 => guest.truth.fields[(value % fields) as usize].raw(),
            2 => guest.truth.objects[(value % objects) as usize].addr.raw().wrapping_add(value >> 56),
            _ => guest.read_u64(va).unwrap_or(0) ^ value,
        };
        if let Ok(old) = guest.read_u64(va) {
            if guest.write_u64(va, new).is_ok() {
                undo.push((va, old));
            }
        }
    }
    let snap = reader.read(&guest.memory);
    std::hint::black_box(snap);
    for (va, old) in undo.into_iter().rev() {
        let _ = guest.write_u64(va, old);
    }
});
