//! The only crate with `unsafe`: a safe wrapper over librrd (thread-safe `_r`
//! entry points only), gmetad's on-disk layout, and an rrdcached client.
