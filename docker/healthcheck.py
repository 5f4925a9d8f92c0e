"""Container healthcheck: exit 0 when the service answers 200 on /v2/health/ready, else 1.

The images run it as ``python /app/healthcheck.py`` (tests run the same file against a real
service). Standard library only; it reads the port from SPECULA_PORT like the service does.
"""

import os
import sys
import urllib.error
import urllib.request

port = os.environ.get("SPECULA_PORT", "8000")
url = os.environ.get("SPECULA_HEALTHCHECK_URL", f"http://127.0.0.1:{port}/v2/health/ready")
try:
    with urllib.request.urlopen(url, timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except (urllib.error.URLError, OSError) as exc:
    print(f"not ready: {exc}", file=sys.stderr)
    sys.exit(1)
