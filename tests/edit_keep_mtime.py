"""edit_keep_mtime.py FILE: flip the bits of FILE's last byte in place and put its
access and modification times back (size unchanged), as a careless in-place edit or a
tool that restores timestamps would; only the ctime tells. Used by store_cli.sh and
prune_cli.sh to show the file-hash cache is not fooled. Running it twice restores the
bytes."""
import os
import sys

p = sys.argv[1]
st = os.stat(p)
with open(p, "r+b") as f:
    f.seek(st.st_size - 1)
    b = f.read(1)
    f.seek(st.st_size - 1)
    f.write(bytes([b[0] ^ 0x5A]))
os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
after = os.stat(p)
assert after.st_mtime_ns == st.st_mtime_ns and after.st_size == st.st_size
