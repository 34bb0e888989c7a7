import sys, gguf, numpy as np
a, b = gguf.GGUFReader(sys.argv[1]), gguf.GGUFReader(sys.argv[2])
ta = {t.name: t for t in a.tensors}; tb = {t.name: t for t in b.tensors}
assert set(ta) == set(tb); print("same order", list(ta) == list(tb), list(ta)[:4], list(tb)[:4])
same = diff = 0; bad = []
for n in ta:
    x, y = ta[n], tb[n]
    if x.tensor_type != y.tensor_type or list(x.shape) != list(y.shape): bad.append((n, x.tensor_type.name, y.tensor_type.name)); continue
    if np.array_equal(np.asarray(x.data).view(np.uint8), np.asarray(y.data).view(np.uint8)): same += 1
    else:
        d = np.count_nonzero(np.asarray(x.data).view(np.uint8) != np.asarray(y.data).view(np.uint8)); diff += 1
        print("differs", n, x.tensor_type.name, d, "of", x.n_bytes, "bytes")
print("tensors", len(ta), "identical", same, "different bytes", diff, "different types", bad[:5], len(bad))
ka = {k: v for k, v in a.fields.items() if not k.startswith("GGUF.")}; kb = {k: v for k, v in b.fields.items() if not k.startswith("GGUF.")}
print("keys only in first", sorted(set(ka) - set(kb)), "only in second", sorted(set(kb) - set(ka)))
for k in sorted(set(ka) & set(kb)):
    va = [bytes(p) for p in (ka[k].parts[i] for i in ka[k].data)]; vb = [bytes(p) for p in (kb[k].parts[i] for i in kb[k].data)]
    if va != vb or ka[k].types != kb[k].types: print("metadata differs", k, ka[k].types, kb[k].types, va[:3], vb[:3])
