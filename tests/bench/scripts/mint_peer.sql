SELECT count(bench_peer.nanoid('org')) FROM generate_series(1, 1000);
