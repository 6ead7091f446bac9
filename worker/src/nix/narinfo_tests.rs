use super::*;

// Written by `nix copy --to file://…?compression=xz` (Nix 2.8) for a signed path with
// two references, and for one of those (no references, no signature).
const WITH_REFS: &str = "StorePath: /nix/store/x7nmn0jylwzcda035v787lpja0mnb6sa-with-refs
URL: nar/19xrmpr88q18721qcgxsfrz43p1cvkxd6nsqnz1vqcqwa39ra3cv.nar.xz
Compression: xz
FileHash: sha256:19xrmpr88q18721qcgxsfrz43p1cvkxd6nsqnz1vqcqwa39ra3cv
FileSize: 212
NarHash: sha256:03hv4pkxrs23nh0ib9dqdnmizrqfp21nik6lk045204zx05w3syh
NarSize: 224
References: h7gp268p5slha3i50466ffpaixchymgl-b-dep.txt mgw6qqx1y9d333nrv50qmznas4cbnsqm-a-dep.txt
Sig: test-1:3luLeDGd3VvF8hrARR3zPyVQbfeHMEM6caN5WMW0Sajl43X93yE/mfKsCcD6Qlwl76pba8vd40nsnju3M3GdAA==
CA: text:sha256:0pf6jl5k0xzk0cnc499cdyfdk0vdqch4wablw43lg76vzyck0b4j
";

const NO_REFS: &str = "StorePath: /nix/store/h7gp268p5slha3i50466ffpaixchymgl-b-dep.txt
URL: nar/05vcsq25cr9xwplzi39aaljmgp9jkyqpal30jwpa053bywy533qa.nar.xz
Compression: xz
FileHash: sha256:05vcsq25cr9xwplzi39aaljmgp9jkyqpal30jwpa053bywy533qa
FileSize: 128
NarHash: sha256:1vl7dq049wsjdnamn28vdimwnx3x4pb118zgyi7jk84zk9rxvypf
NarSize: 120
References: 
CA: fixed:r:sha256:1vl7dq049wsjdnamn28vdimwnx3x4pb118zgyi7jk84zk9rxvypf
";

// What the niks3 client has signed: no FileHash/FileSize, a Deriver, no CA.
const NIKS3_STYLE: &str = "StorePath: /nix/store/x7nmn0jylwzcda035v787lpja0mnb6sa-with-refs
URL: nar/03hv4pkxrs23nh0ib9dqdnmizrqfp21nik6lk045204zx05w3syh.nar.zst
Compression: zstd
NarHash: sha256:03hv4pkxrs23nh0ib9dqdnmizrqfp21nik6lk045204zx05w3syh
NarSize: 224
References: h7gp268p5slha3i50466ffpaixchymgl-b-dep.txt mgw6qqx1y9d333nrv50qmznas4cbnsqm-a-dep.txt
Deriver: 26xbg1ndr7hbcncrlf9nhx5is2b25d13-with-refs.drv
Sig: a-1:3luLeDGd3VvF8hrARR3zPyVQbfeHMEM6caN5WMW0Sajl43X93yE/mfKsCcD6Qlwl76pba8vd40nsnju3M3GdAA==
Sig: b-1:bBJUctecSCdOCi5XSqf3adbVZy2tXbvIeu1Rdofdi/mHDAiVnD5XwYX0oEsVBMEPZc3DHrUq/mhLWHaIlUzaBg==
";

const SECRET: &str = "test-1:p1lSmHX5B7rU++pc3DrCDuLCbZtQOn2JEETFjp8IuakRad8VpFi/7TSsf/IS16ZgE0iQy/dXFeisewvpC1FHpQ==";
const PUBLIC: &str = "test-1:EWnfFaRYv+00rH/yEtemYBNIkMv3VxXorHsL6QtRR6U=";

#[test]
fn nix_written_narinfos_round_trip_byte_for_byte() {
    for text in [WITH_REFS, NO_REFS, NIKS3_STYLE] {
        let ni = NarInfo::parse(text).unwrap();
        assert_eq!(ni.render(), text);
        assert_eq!(NarInfo::parse_bytes(text.as_bytes()).unwrap(), ni);
    }
}

#[test]
fn fields_are_parsed() {
    let ni = NarInfo::parse(WITH_REFS).unwrap();
    assert_eq!(ni.store_path.name(), "with-refs");
    assert_eq!(ni.compression, Compression::Xz);
    assert_eq!(ni.file_size, Some(212));
    assert_eq!(ni.nar_size, 224);
    assert_eq!(ni.references.len(), 2);
    assert_eq!(ni.deriver, None);
    assert_eq!(ni.signatures.len(), 1);
    assert_eq!(
        ni.ca.as_deref(),
        Some("text:sha256:0pf6jl5k0xzk0cnc499cdyfdk0vdqch4wablw43lg76vzyck0b4j")
    );
    let n3 = NarInfo::parse(NIKS3_STYLE).unwrap();
    assert_eq!((n3.file_hash, n3.file_size, &n3.ca), (None, None, &None));
    assert_eq!(n3.deriver.unwrap().name(), "with-refs.drv");
    let names: Vec<_> = n3.signatures.iter().map(|s| s.key_name()).collect();
    assert_eq!(names, ["a-1", "b-1"]);
}

#[test]
fn signature_from_nix_verifies_and_resigning_reproduces_it() {
    let ni = NarInfo::parse(WITH_REFS).unwrap();
    let pk = PublicKey::parse(PUBLIC).unwrap();
    assert!(ni.is_signed_by_any(std::slice::from_ref(&pk)));
    let mut unsigned = ni.clone();
    unsigned.signatures.clear();
    assert!(!unsigned.is_signed_by_any(std::slice::from_ref(&pk)));
    unsigned.sign(&SecretKey::parse(SECRET).unwrap());
    assert_eq!(unsigned, ni);
    // Signing again replaces rather than duplicates.
    unsigned.sign(&SecretKey::parse(SECRET).unwrap());
    assert_eq!(unsigned.signatures.len(), 1);
}

#[test]
fn references_render_sorted_and_unique() {
    let mut ni = NarInfo::parse(WITH_REFS).unwrap();
    ni.references.reverse();
    ni.references.push(ni.references[0].clone());
    assert_eq!(ni.render(), WITH_REFS);
    // Parsing also sorts.
    let swapped = WITH_REFS.replace(
        "h7gp268p5slha3i50466ffpaixchymgl-b-dep.txt mgw6qqx1y9d333nrv50qmznas4cbnsqm-a-dep.txt",
        "mgw6qqx1y9d333nrv50qmznas4cbnsqm-a-dep.txt  h7gp268p5slha3i50466ffpaixchymgl-b-dep.txt",
    );
    assert_eq!(NarInfo::parse(&swapped).unwrap().render(), WITH_REFS);
}

#[test]
fn tolerates_unknown_keys_missing_compression_and_unknown_deriver() {
    let text = "StorePath: /nix/store/x7nmn0jylwzcda035v787lpja0mnb6sa-with-refs
URL: nar/x.nar.bz2
System: x86_64-linux
NarHash: sha256:03hv4pkxrs23nh0ib9dqdnmizrqfp21nik6lk045204zx05w3syh
NarSize: 224
References:
Deriver: unknown-deriver
System: again, unknown keys may repeat
";
    let ni = NarInfo::parse(text).unwrap();
    assert_eq!(ni.compression, Compression::Bzip2);
    assert!(ni.references.is_empty());
    assert_eq!(ni.deriver, None);
    // No trailing newline is fine too.
    assert!(NarInfo::parse(WITH_REFS.trim_end()).is_ok());
}

fn err(text: &str) -> NarInfoError {
    NarInfo::parse(text).unwrap_err()
}

fn replace_line(prefix: &str, with: &str) -> String {
    WITH_REFS
        .lines()
        .map(|l| if l.starts_with(prefix) { with } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

fn without_line(prefix: &str) -> String {
    WITH_REFS
        .lines()
        .filter(|l| !l.starts_with(prefix))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn rejects_missing_required_fields() {
    for (prefix, name) in [
        ("StorePath:", "StorePath"),
        ("URL:", "URL"),
        ("NarHash:", "NarHash"),
        ("NarSize:", "NarSize"),
    ] {
        assert_eq!(err(&without_line(prefix)), NarInfoError::Missing(name));
    }
    assert_eq!(err(""), NarInfoError::Missing("StorePath"));
}

#[test]
fn rejects_duplicates() {
    let dup = format!("{WITH_REFS}NarSize: 224\n");
    assert_eq!(
        err(&dup),
        NarInfoError::Duplicate {
            field: "NarSize",
            line: 11
        }
    );
    let dup = format!("{NO_REFS}References: \n");
    assert!(matches!(
        err(&dup),
        NarInfoError::Duplicate {
            field: "References",
            ..
        }
    ));
}

#[test]
fn rejects_bad_values() {
    use NarInfoError::*;
    for bad in [
        "-1",
        "+1",
        "1.0",
        "0x10",
        "18446744073709551616",
        " 1",
        "one",
    ] {
        let e = err(&replace_line("NarSize:", &format!("NarSize: {bad}")));
        assert!(
            matches!(
                e,
                BadNumber {
                    field: "NarSize",
                    line: 7,
                    ..
                }
            ),
            "{bad}: {e}"
        );
    }
    assert!(matches!(
        err(&replace_line("FileSize:", "FileSize: x")),
        BadNumber {
            field: "FileSize",
            ..
        }
    ));
    assert!(matches!(
        err(&replace_line("StorePath:", "StorePath: /tmp/x")),
        BadPath {
            field: "StorePath",
            line: 1,
            ..
        }
    ));
    assert!(matches!(
        err(&replace_line("References:", "References: not-a-path")),
        BadPath {
            field: "References",
            ..
        }
    ));
    let with_deriver =
        format!("{WITH_REFS}Deriver: /nix/store/26xbg1ndr7hbcncrlf9nhx5is2b25d13-a.drv\n");
    assert!(matches!(
        err(&with_deriver),
        BadPath {
            field: "Deriver",
            ..
        }
    ));
    assert!(matches!(
        err(&replace_line("NarHash:", "NarHash: md5:abc")),
        BadHash {
            field: "NarHash",
            ..
        }
    ));
    assert!(matches!(
        err(&replace_line("FileHash:", "FileHash: sha256:xyz")),
        BadHash {
            field: "FileHash",
            ..
        }
    ));
    assert!(matches!(
        err(&replace_line("Compression:", "Compression: br")),
        BadCompression { line: 3, .. }
    ));
    assert!(matches!(
        err(&replace_line("Sig:", "Sig: nocolon")),
        BadSig { line: 9, .. }
    ));
    assert!(matches!(
        err(&replace_line("CA:", "CA: sha256:abc")),
        BadCa { line: 10, .. }
    ));
    assert!(matches!(
        err(&replace_line("URL:", "URL: ")),
        Empty { field: "URL", .. }
    ));
    assert!(matches!(
        err(&replace_line("URL:", "just some text")),
        MalformedLine { line: 2, .. }
    ));
}

#[test]
fn size_and_encoding_are_capped() {
    let big = format!("{WITH_REFS}X: {}\n", "a".repeat(MAX_NARINFO_LEN));
    assert!(matches!(err(&big), NarInfoError::TooLarge { .. }));
    assert!(matches!(
        NarInfo::parse_bytes(big.as_bytes()),
        Err(NarInfoError::TooLarge { .. })
    ));
    assert_eq!(
        NarInfo::parse_bytes(b"StorePath: \xff\n").unwrap_err(),
        NarInfoError::NotUtf8
    );
}

#[test]
fn errors_read_well() {
    let e = err(&replace_line("NarSize:", "NarSize: lots"));
    assert_eq!(
        e.to_string(),
        "narinfo line 7: NarSize \"lots\" is not a decimal number"
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = NarInfo::parse_bytes(&bytes);
        }

        #[test]
        fn never_panics_on_mutated_narinfos(cut in 0usize..WITH_REFS.len(), insert in "[ -~\n]{0,40}") {
            let mut text = WITH_REFS.to_owned();
            text.insert_str(cut, &insert);
            if let Ok(ni) = NarInfo::parse(&text) {
                // Whatever parses renders to something that parses to the same value.
                prop_assert_eq!(NarInfo::parse(&ni.render()).unwrap(), ni);
            }
        }
    }
}
