#!/usr/bin/env bash
# A demo SSH host with pam-twofa on 127.0.0.1:2222, in Docker, as root:
#   sudo bash scripts/demo.sh          (or: sudo make demo)
# Stop it with: docker rm -f pam-twofa-demo
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "demo.sh: run as root (sudo make demo)" >&2; exit 1; fi

bash scripts/docker-engine.sh
bash docker/base-image.sh pam-twofa-base:bookworm
echo "Building the demo SSH host (a few minutes the first time)..."
docker build -q --network host -f docker/Dockerfile \
    --build-arg BASE=pam-twofa-base:bookworm --build-arg STACK=password --build-arg PORT=2222 \
    -t pam-twofa-demo . >/dev/null

docker rm -f pam-twofa-demo >/dev/null 2>&1 || true
docker run -d --name pam-twofa-demo --network host pam-twofa-demo >/dev/null

# The demo account: password "demo", enrolled with a fresh secret. The code
# used to enroll is the previous one, so the app's current code works at once.
docker exec -i pam-twofa-demo sh -s <<'SH'
set -e
useradd -m -s /bin/bash demo 2>/dev/null || true
echo demo:demo | chpasswd
secret=$(python3 -c 'import base64, os; print(base64.b32encode(os.urandom(20)).decode())')
code=$(python3 -c 'import base64, sys, time; from pam_twofa.core import totp; print(totp.totp(base64.b32decode(sys.argv[1]), time.time() - 30))' "$secret")
twofa-enroll --user demo --secret "$secret" --code "$code" --force >/dev/null
python3 - "$secret" <<'PY'
import socket, sys
from pam_twofa.system import qr
from pam_twofa.cli.enroll import group4, provisioning_uri
import base64
secret = sys.argv[1]
uri = provisioning_uri(base64.b32decode(secret), "demo", socket.gethostname(), "pam-twofa demo", 6, 30, "SHA1")
print("\nScan this with an authenticator app (Google Authenticator, FreeOTP, Aegis, ...):\n")
print(qr.render(uri))
print("Cannot scan it? Add a time-based account by hand with the key:\n    " + group4(secret.rstrip("=")))
print("or compute codes with:  oathtool --totp -b " + secret.rstrip("="))
PY
SH

for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/2222) 2>/dev/null && break
    sleep 0.2
done
cat <<MSG

The demo SSH host runs on 127.0.0.1:2222 with two-factor authentication on.
Try:
    ssh -p 2222 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null demo@127.0.0.1
It asks for the password (demo), then "Verification code:" (the app's 6 digits).
A code works once: after a login, wait for the next code for another one.
Stop the demo with:  docker rm -f pam-twofa-demo
MSG
