fn main() {
    // Emits the linker flags an N-API addon needs (symbols resolved by node).
    napi_build::setup();
}
