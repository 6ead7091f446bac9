use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// A file tree held in memory, for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tree {
    File { executable: bool, data: Vec<u8> },
    Link(Vec<u8>),
    Dir(BTreeMap<Vec<u8>, Tree>),
}

fn write_tree(w: &mut NarWriter<Vec<u8>>, t: &Tree) -> Result<(), NarError> {
    match t {
        Tree::File { executable, data } => {
            w.regular(*executable, data.len() as u64)?;
            // Feed in uneven chunks, as a file reader would.
            for chunk in data.chunks(3) {
                w.contents(chunk)?;
            }
            Ok(())
        }
        Tree::Link(target) => w.symlink(target),
        Tree::Dir(entries) => {
            w.start_directory()?;
            for (name, child) in entries {
                w.entry(name)?;
                write_tree(w, child)?;
            }
            w.end_directory()
        }
    }
}

fn nar_of(t: &Tree) -> Vec<u8> {
    let mut w = NarWriter::new(Vec::new()).unwrap();
    write_tree(&mut w, t).unwrap();
    w.finish().unwrap()
}

/// Directories being read: the entry name each has in its parent, and its entries so far.
type OpenDirs = Vec<(Option<Vec<u8>>, BTreeMap<Vec<u8>, Tree>)>;

/// Reads a NAR back into a tree, reading file contents through `read_contents`.
fn read_tree(nar: &[u8]) -> Result<Tree, NarError> {
    let mut r = NarReader::new(nar);
    let mut stack: OpenDirs = Vec::new();
    let mut root = None;
    let mut place =
        |stack: &mut OpenDirs, name: Option<Vec<u8>>, t: Tree| match (stack.last_mut(), name) {
            (Some((_, entries)), Some(n)) => {
                entries.insert(n, t);
            }
            _ => root = Some(t),
        };
    while let Some(ev) = r.next()? {
        match ev {
            NarEvent::Regular {
                name,
                executable,
                size,
                nar_offset,
            } => {
                assert_eq!(nar_offset, r.position());
                let mut data = Vec::new();
                let mut buf = [0u8; 5];
                loop {
                    let n = r.read_contents(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    data.extend_from_slice(&buf[..n]);
                }
                assert_eq!(data.len() as u64, size);
                place(&mut stack, name, Tree::File { executable, data });
            }
            NarEvent::Symlink { name, target } => place(&mut stack, name, Tree::Link(target)),
            NarEvent::Directory { name } => stack.push((name, BTreeMap::new())),
            NarEvent::EndDirectory => {
                let (name, entries) = stack.pop().unwrap();
                place(&mut stack, name, Tree::Dir(entries));
            }
        }
    }
    Ok(root.unwrap())
}

fn file(data: &[u8]) -> Tree {
    Tree::File {
        executable: false,
        data: data.to_vec(),
    }
}

fn dir(entries: &[(&str, Tree)]) -> Tree {
    Tree::Dir(
        entries
            .iter()
            .map(|(n, t)| (n.as_bytes().to_vec(), t.clone()))
            .collect(),
    )
}

/// The NAR as a list of strings, for readable expectations.
fn s(x: &[u8]) -> Vec<u8> {
    let mut v = (x.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(x);
    v.resize(8 + x.len() + padding(x.len() as u64), 0);
    v
}

#[test]
fn single_file_matches_nix_store_dump() {
    // `printf hi > a; nix-store --dump a | xxd` on Nix 2.8.
    let expected: Vec<u8> = [
        s(b"nix-archive-1"),
        s(b"("),
        s(b"type"),
        s(b"regular"),
        s(b"contents"),
        s(b"hi"),
        s(b")"),
    ]
    .concat();
    assert_eq!(nar_of(&file(b"hi")), expected);
    assert_eq!(expected.len(), 0x78);
}

#[test]
fn executable_symlink_and_directory_layouts() {
    let exe = Tree::File {
        executable: true,
        data: vec![],
    };
    let expected: Vec<u8> = [
        s(b"nix-archive-1"),
        s(b"("),
        s(b"type"),
        s(b"directory"),
        s(b"entry"),
        s(b"("),
        s(b"name"),
        s(b"l"),
        s(b"node"),
        s(b"("),
        s(b"type"),
        s(b"symlink"),
        s(b"target"),
        s(b"../x"),
        s(b")"),
        s(b")"),
        s(b"entry"),
        s(b"("),
        s(b"name"),
        s(b"x"),
        s(b"node"),
        s(b"("),
        s(b"type"),
        s(b"regular"),
        s(b"executable"),
        s(b""),
        s(b"contents"),
        s(b""),
        s(b")"),
        s(b")"),
        s(b")"),
    ]
    .concat();
    let t = dir(&[("l", Tree::Link(b"../x".to_vec())), ("x", exe)]);
    assert_eq!(nar_of(&t), expected);
}

#[test]
fn round_trips_edge_cases() {
    let long = "n".repeat(255);
    let trees = [
        file(b""),
        file(b"12345678"),
        file(b"123456789"),
        Tree::Link(b"/nix/store/x".to_vec()),
        dir(&[]),
        dir(&[
            ("A", file(b"upper sorts first")),
            ("a", dir(&[("empty", dir(&[]))])),
            ("a.b", file(b"")),
            (long.as_str(), Tree::Link(b"t".to_vec())),
            ("hm_..zlogout", file(b"dots inside a name are fine")),
        ]),
    ];
    for t in trees {
        let nar = nar_of(&t);
        assert_eq!(nar.len() % 8, 0);
        assert_eq!(read_tree(&nar).unwrap(), t);
    }
}

#[test]
fn reports_nar_offsets_nix_reports() {
    // Offsets `nix nar ls --json -R` gave for a dir with a (2 bytes), e/, empty, l -> a, x (exe).
    let t = dir(&[
        ("a", file(b"hi")),
        ("e", dir(&[])),
        ("empty", file(b"")),
        ("l", Tree::Link(b"a".to_vec())),
        (
            "x",
            Tree::File {
                executable: true,
                data: b"#!/bin/sh\n".to_vec(),
            },
        ),
    ]);
    let nar = nar_of(&t);
    let mut r = NarReader::new(nar.as_slice());
    let mut offsets = Vec::new();
    while let Some(ev) = r.next().unwrap() {
        if let NarEvent::Regular { nar_offset, .. } = ev {
            offsets.push(nar_offset);
        }
    }
    assert_eq!(offsets, [232, 592, 1000]);
}

#[test]
fn writer_rejects_misuse() {
    let w = || NarWriter::new(Vec::new()).unwrap();
    let mut a = w();
    a.start_directory().unwrap();
    a.entry(b"b").unwrap();
    a.regular(false, 0).unwrap();
    assert!(matches!(a.entry(b"a"), Err(NarError::Unsorted { .. })));
    assert!(matches!(a.entry(b"b"), Err(NarError::Unsorted { .. })));
    for bad in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
        assert!(
            matches!(a.entry(bad), Err(NarError::BadName { .. })),
            "{bad:?}"
        );
    }
    let mut b = w();
    b.regular(false, 3).unwrap();
    assert!(matches!(
        b.contents(b"abcd"),
        Err(NarError::SizeMismatch {
            declared: 3,
            written: 4
        })
    ));
    b.contents(b"ab").unwrap();
    assert!(matches!(
        b.finish(),
        Err(NarError::SizeMismatch {
            declared: 3,
            written: 2
        })
    ));
    let mut c = w();
    assert!(matches!(c.entry(b"a"), Err(NarError::Misuse(_))));
    assert!(matches!(c.contents(b"a"), Err(NarError::Misuse(_))));
    assert!(matches!(c.end_directory(), Err(NarError::Misuse(_))));
    assert!(matches!(c.symlink(b""), Err(NarError::BadTarget)));
    c.symlink(b"x").unwrap();
    assert!(matches!(c.symlink(b"x"), Err(NarError::Misuse(_))));
    let mut d = w();
    d.start_directory().unwrap();
    assert!(matches!(d.finish(), Err(NarError::Misuse(_))));
}

/// Builds a NAR by hand from strings, to feed the reader what no writer would make.
fn raw(parts: &[&[u8]]) -> Vec<u8> {
    parts.iter().flat_map(|p| s(p)).collect()
}

fn read_all(nar: &[u8]) -> Result<Vec<NarEvent>, NarError> {
    let mut r = NarReader::new(nar);
    let mut evs = Vec::new();
    while let Some(ev) = r.next()? {
        evs.push(ev);
    }
    Ok(evs)
}

fn with_dir(entries: &[&[&[u8]]]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = vec![b"nix-archive-1", b"(", b"type", b"directory"];
    for e in entries {
        parts.extend_from_slice(e);
    }
    parts.push(b")");
    raw(&parts)
}

#[test]
fn reader_rejects_bad_structure() {
    fn link(name: &[u8]) -> Vec<&[u8]> {
        vec![
            b"entry", b"(", b"name", name, b"node", b"(", b"type", b"symlink", b"target", b"t",
            b")", b")",
        ]
    }
    let ok = with_dir(&[&link(b"a"), &link(b"b")]);
    assert_eq!(read_all(&ok).unwrap().len(), 4);

    let unsorted = with_dir(&[&link(b"b"), &link(b"a")]);
    assert!(matches!(
        read_all(&unsorted),
        Err(NarError::Unsorted { .. })
    ));
    let dup = with_dir(&[&link(b"a"), &link(b"a")]);
    assert!(matches!(read_all(&dup), Err(NarError::Unsorted { .. })));
    for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
        let nar = with_dir(&[&link(bad)]);
        assert!(
            matches!(read_all(&nar), Err(NarError::BadName { .. })),
            "{bad:?}"
        );
    }
    let long = vec![b'n'; 256];
    let nar = with_dir(&[&link(&long)]);
    assert!(matches!(
        read_all(&nar),
        Err(NarError::TooLong {
            what: "entry name",
            len: 256,
            ..
        })
    ));

    let not_nar = raw(&[b"nix-archive-2", b"("]);
    assert!(matches!(read_all(&not_nar), Err(NarError::BadMagic)));
    assert!(matches!(read_all(b""), Err(NarError::BadMagic)));
    assert!(matches!(read_all(&[0xff; 64]), Err(NarError::BadMagic)));

    let bad_type = raw(&[b"nix-archive-1", b"(", b"type", b"fifo", b")"]);
    assert!(matches!(
        read_all(&bad_type),
        Err(NarError::UnexpectedToken { .. })
    ));
    let empty_target = raw(&[
        b"nix-archive-1",
        b"(",
        b"type",
        b"symlink",
        b"target",
        b"",
        b")",
    ]);
    assert!(matches!(read_all(&empty_target), Err(NarError::BadTarget)));

    let mut trailing = nar_of(&file(b"x"));
    trailing.push(0);
    assert!(matches!(
        read_all(&trailing),
        Err(NarError::TrailingData { .. })
    ));

    // "hi" is padded with six zero bytes right before the closing ")".
    let mut dirty = nar_of(&file(b"hi"));
    let at = dirty.len() - 16 - 1;
    dirty[at] = 1;
    assert!(matches!(
        read_all(&dirty),
        Err(NarError::NonZeroPadding { .. })
    ));
    // Padding of a keyword string.
    let mut dirty = nar_of(&file(b"hi"));
    dirty[8 + 13] = b'!';
    assert!(matches!(read_all(&dirty), Err(NarError::BadMagic)));
}

#[test]
fn every_truncation_is_an_error() {
    let nar = nar_of(&dir(&[
        ("a", file(b"hello")),
        ("b", Tree::Link(b"a".to_vec())),
    ]));
    for cut in 0..nar.len() {
        assert!(read_all(&nar[..cut]).is_err(), "cut at {cut}");
    }
    assert!(read_all(&nar).is_ok());
}

#[test]
fn limits_hold() {
    let mut t = dir(&[]);
    for _ in 0..5 {
        t = dir(&[("d", t)]);
    }
    let nar = nar_of(&t);
    let limits = |f: fn(&mut NarLimits)| {
        let mut l = NarLimits::default();
        f(&mut l);
        l
    };
    let read = |l: NarLimits| -> Result<(), NarError> {
        let mut r = NarReader::with_limits(nar.as_slice(), l);
        while r.next()?.is_some() {}
        Ok(())
    };
    assert!(read(limits(|l| l.max_depth = 6)).is_ok());
    assert!(matches!(
        read(limits(|l| l.max_depth = 5)),
        Err(NarError::TooDeep { max: 5 })
    ));
    assert!(matches!(
        read(limits(|l| l.max_entries = 5)),
        Err(NarError::TooManyEntries { max: 5 })
    ));
    assert!(matches!(
        read(limits(|l| l.max_nar_size = 100)),
        Err(NarError::TooLong { what: "NAR", .. })
    ));
    // A declared file size far beyond the data is an early end, not an allocation.
    let huge = [
        raw(&[b"nix-archive-1", b"(", b"type", b"regular", b"contents"]),
        u64::MAX.to_le_bytes().to_vec(),
    ]
    .concat();
    assert!(matches!(
        read_all(&huge),
        Err(NarError::UnexpectedEof { .. })
    ));
}

#[test]
fn reader_errors_are_sticky() {
    let mut r = NarReader::new(&b"junk"[..]);
    assert!(r.next().is_err());
    assert!(matches!(r.next(), Err(NarError::Misuse(_))));
    let nar = nar_of(&file(b""));
    let mut r = NarReader::new(nar.as_slice());
    assert!(r.next().unwrap().is_some());
    assert!(r.next().unwrap().is_none());
    assert!(r.next().unwrap().is_none());
}

fn arb_name() -> impl Strategy<Value = Vec<u8>> {
    // Names of any bytes but `/` and NUL, excluding `.` and `..`.
    proptest::collection::vec(1u8..=255, 1..12)
        .prop_filter("not a path separator or dot entry", |n| {
            !n.contains(&b'/') && n != b"." && n != b".."
        })
}

fn arb_tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(executable, data)| Tree::File { executable, data }),
        proptest::collection::vec(1u8..=255, 1..20).prop_map(Tree::Link),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        proptest::collection::btree_map(arb_name(), inner, 0..6).prop_map(Tree::Dir)
    })
}

proptest! {
    #[test]
    fn any_tree_round_trips(t in arb_tree()) {
        let nar = nar_of(&t);
        prop_assert_eq!(read_tree(&nar).unwrap(), t);
    }

    #[test]
    fn reader_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = read_all(&bytes);
    }

    #[test]
    fn reader_never_panics_on_corrupted_nars(t in arb_tree(), at in any::<usize>(), byte in any::<u8>()) {
        let mut nar = nar_of(&t);
        let i = at % nar.len();
        nar[i] = byte;
        let _ = read_all(&nar);
    }
}
