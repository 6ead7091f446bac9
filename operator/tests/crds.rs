//! The committed CRDs are exactly what `crdgen` prints, and carry what users see.
#![allow(clippy::unwrap_used)] // a test file: a panic is the failure report

use larder_operator::crd;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/larder.yaml");

#[test]
fn committed_crds_match_crdgen() {
    let generated = crd::to_yaml().unwrap();
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    if committed != generated {
        if std::env::var_os("LARDER_UPDATE_CRDS").is_some() {
            std::fs::write(COMMITTED, &generated).unwrap();
            return;
        }
        panic!(
            "crds/larder.yaml differs from `larder-operator crdgen`; regenerate it with\n  \
             cargo run -p larder-operator -- crdgen > crds/larder.yaml"
        );
    }
}

fn crd_json(kind: &str) -> serde_json::Value {
    let crd = crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    serde_json::to_value(crd).unwrap()
}

#[test]
fn names_and_short_names() {
    let bc = crd_json("BinaryCache");
    assert_eq!(bc["metadata"]["name"], "binarycaches.larder.dev");
    assert_eq!(bc["spec"]["scope"], "Namespaced");
    assert_eq!(bc["spec"]["names"]["shortNames"][0], "bc");
    let gcp = crd_json("GCPolicy");
    assert_eq!(gcp["metadata"]["name"], "gcpolicies.larder.dev");
    assert_eq!(gcp["spec"]["names"]["shortNames"][0], "gcp");
}

#[test]
fn printer_columns() {
    let columns = |kind| -> Vec<String> {
        crd_json(kind)["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        columns("BinaryCache"),
        ["Ready", "URL", "Public Key", "Age"]
    );
    assert_eq!(
        columns("GCPolicy"),
        ["Cache", "Schedule", "Last Run", "Last Result", "Age"]
    );
}

#[test]
fn schema_requires_and_validates() {
    let bc = crd_json("BinaryCache");
    let schema = &bc["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let spec = &schema["properties"]["spec"];
    let required: Vec<_> = spec["required"].as_array().unwrap().iter().collect();
    assert!(required.contains(&&serde_json::json!("storage")));
    assert!(required.contains(&&serde_json::json!("database")));
    let bucket = &spec["properties"]["storage"]["properties"]["bucket"];
    assert_eq!(
        bucket["x-kubernetes-validations"][0]["rule"],
        "self == oldSelf"
    );
    let creds = &spec["properties"]["storage"]["properties"]["credentials"];
    assert!(creds["x-kubernetes-validations"][0]["rule"]
        .as_str()
        .unwrap()
        .contains("roleArn"));
    assert_eq!(spec["properties"]["priority"]["default"], 40);
    assert!(bc["spec"]["versions"][0]["subresources"]["status"].is_object());
}
