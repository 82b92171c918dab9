#!/usr/bin/env bash
# Install pam-twofa on a Debian 12 / Ubuntu host, as root. Idempotent.
# It does NOT switch sshd to 2FA: it prints how to (twofa-admin pam-config).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then echo "install.sh: run as root (sudo bash scripts/install.sh)" >&2; exit 1; fi

# python3-psycopg2 and python3-cryptography: the database backend (pam-twofa-agent, twofa-admin db),
# never imported on the login path. (docker/Dockerfile reads this one line.)
DEPS="sudo libpam-python python3-six python3-yaml python3-pyotp python3-qrcode python3-pampy python3-pip python3-setuptools python3-wheel python3-psycopg2 python3-cryptography"
missing=$(for p in $DEPS; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"; done)
if [ -n "$missing" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# Into the interpreter pam_python.so embeds (Debian's /usr/bin/python3), whatever
# python3 comes first on PATH. Dependencies come from the Debian packages above.
# Built from a copy so the checkout stays clean (setuptools writes build/ in-tree).
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r pam_twofa setup.cfg pyproject.toml README.md "$src"/
/usr/bin/python3 -m pip install --quiet --no-deps --no-build-isolation --no-cache-dir \
    --break-system-packages --root-user-action=ignore --upgrade --force-reinstall "$src"

# Self-service enrollment: every user may run exactly this helper as root,
# which acts only for the account sudo names in SUDO_UID (see README).
install -d -m 0755 -o root -g root /usr/local/libexec/pam-twofa
cat > /usr/local/libexec/pam-twofa/enroll-self <<'PY'
#!/usr/bin/python3 -I
from pam_twofa.cli.enroll import self_service_entry
self_service_entry()
PY
chmod 0755 /usr/local/libexec/pam-twofa/enroll-self
cat > /etc/sudoers.d/pam-twofa.tmp <<'SUDO'
# pam-twofa: any user may enroll their own account (twofa-enroll re-runs itself through this).
ALL ALL=(root) NOPASSWD: /usr/local/libexec/pam-twofa/enroll-self
SUDO
chmod 0440 /etc/sudoers.d/pam-twofa.tmp
visudo -cqf /etc/sudoers.d/pam-twofa.tmp && mv /etc/sudoers.d/pam-twofa.tmp /etc/sudoers.d/pam-twofa

install -d -m 0755 -o root -g root /etc/pam-twofa
if [ ! -e /etc/pam-twofa/policy.yaml ]; then
    install -m 0644 -o root -g root pam_twofa/data/policy.yaml /etc/pam-twofa/policy.yaml
    echo "install.sh: wrote /etc/pam-twofa/policy.yaml (enforce.mode: off)"
fi
install -d -m 0700 -o root -g root /var/lib/pam-twofa

# The host agent of the database backend: in place always, enabled only when the policy selects it.
install -m 0644 -o root -g root config/pam-twofa-agent.service /etc/systemd/system/pam-twofa-agent.service
if /usr/bin/python3 -I -c 'import sys; from pam_twofa import policy
sys.exit(policy.load("/etc/pam-twofa/policy.yaml").backend != "postgresql")' 2>/dev/null; then
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        systemctl enable --now pam-twofa-agent.service
        echo "install.sh: pam-twofa-agent enabled and started (storage.backend: postgresql)"
    else
        echo "install.sh: storage.backend is postgresql but systemd is not running: start pam-twofa-agent yourself"
    fi
fi

/usr/local/bin/twofa-admin check
cat <<MSG

pam-twofa is installed; sshd is unchanged. To turn 2FA on for SSH, enroll yourself
first (twofa-enroll --user YOU), keep a root shell open, then install the lines from:
    twofa-admin pam-config                 # password + code
    twofa-admin pam-config --stack key     # SSH key + code
MSG
