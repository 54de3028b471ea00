//! The contract is enforced by the compiler: a plugin with a bad name, a
//! version that is not semver, or no `process` does not build.

#[test]
fn broken_plugins_do_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
