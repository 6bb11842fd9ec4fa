//! Behaviour only the embedded store has: the exclusive lock on its data directory.

use kv::{Kv, KvError};

#[test]
fn second_embedded_store_on_one_dir_is_refused_while_the_first_lives() {
    let dir = tempfile::tempdir().unwrap();
    // The directory is created if missing.
    let data_dir = dir.path().join("data").join("kv");

    let first = Kv::embedded(&data_dir, "t:").unwrap();
    assert!(first.is_embedded());
    match Kv::embedded(&data_dir, "t:") {
        Err(KvError::EmbeddedInUse(path)) => {
            assert_eq!(path, data_dir.join("embedded-kv.lock"));
        }
        other => panic!("expected EmbeddedInUse, got {other:?}"),
    }

    // Any clone keeps the lock.
    let clone = first.clone();
    drop(first);
    assert!(matches!(Kv::embedded(&data_dir, "t:"), Err(KvError::EmbeddedInUse(_))));

    drop(clone);
    let again = Kv::embedded(&data_dir, "t:").unwrap();
    assert!(again.is_embedded());
}

#[test]
fn embedded_stores_on_different_dirs_coexist() {
    let dir = tempfile::tempdir().unwrap();
    let _one = Kv::embedded(&dir.path().join("one"), "t:").unwrap();
    let _two = Kv::embedded(&dir.path().join("two"), "t:").unwrap();
}
