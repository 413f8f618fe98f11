pub use containerd_shim_protos as shim;
