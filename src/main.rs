fn main() {
    for crd in tcred::api::crds() {
        print!("---\n{}", tcred::api::crd_yaml(&crd).unwrap());
    }
}
