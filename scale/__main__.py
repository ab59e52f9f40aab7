import sys

from imdm_lab.allocator import keep_freed_memory

keep_freed_memory()  # before any tensor: large training buffers are reused, not page-faulted in every step

from scale.cli import main  # noqa: E402

sys.exit(main())
