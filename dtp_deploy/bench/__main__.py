"""``python -m dtp_deploy.bench``: the same as ``dtp-bench``."""

from .cli import main

main()
