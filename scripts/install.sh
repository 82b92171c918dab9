#!/usr/bin/env bash
# Install pam-twofa on a Debian 12 or 13 host, as root. Idempotent.
# Builds the Debian package from this checkout (scripts/build-deb.sh, which
# installs the build tools) and installs it with apt, so its dependencies
# resolve as for any package. An earlier pip-installed copy (/usr/local) is
# removed first. It does NOT switch sshd to 2FA: it prints how to.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then echo "install.sh: run as root (sudo bash scripts/install.sh)" >&2; exit 1; fi

# What the package depends on (debian/control), checked first so that an
# install needing nothing new does not need "apt-get update".
# python3-psycopg (psycopg 3) and python3-cryptography: the database backend
# (pam-twofa-agent, twofa-admin db), never imported on the login path.
DEPS="sudo libpam-python python3-six python3-yaml python3-qrcode python3-pampy python3-psycopg python3-cryptography"

deb=$(bash scripts/build-deb.sh)

# The layout of the earlier installer (pip into /usr/local). Its sudoers
# drop-in goes first: the package ships its own as a conffile.
if [ -e /etc/sudoers.d/pam-twofa ] && ! dpkg-query -S /etc/sudoers.d/pam-twofa >/dev/null 2>&1; then
    rm -f /etc/sudoers.d/pam-twofa
fi

missing=$(for p in $DEPS; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"; done)
[ -z "$missing" ] || apt-get update -qq
# --reinstall: the same version built from a changed checkout is installed
# again. confold: a policy already in /etc/pam-twofa (an admin's, or the
# earlier installer's) is kept; the package's default goes beside it as .dpkg-dist.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "./$deb" >/dev/null

# Now the earlier copy in /usr/local (it would shadow the package's: /usr/local
# comes first on sys.path). A PAM line may still name its pam_module.py: then
# that folder becomes a link to the package's, so those logins keep working
# on the package's code until the line is changed.
old_lines=$(grep -rHnE '^[[:space:]]*[^#[:space:]].*/usr/local/lib/python3[^/]*/dist-packages/pam_twofa/' /etc/pam.d 2>/dev/null || true)
for site in /usr/local/lib/python3*/dist-packages; do
    [ -d "$site" ] || continue
    rm -rf "$site"/pam_twofa-*.dist-info "$site"/pam_twofa-*.egg-info "$site"/pam_twofa.egg-link
    if [ -e "$site/pam_twofa" ] || [ -L "$site/pam_twofa" ]; then
        rm -rf "$site/pam_twofa"
        if [ -n "$old_lines" ]; then
            ln -s /usr/lib/python3/dist-packages/pam_twofa "$site/pam_twofa"
        fi
    fi
done
rm -f /usr/local/bin/twofa-admin /usr/local/bin/twofa-enroll
rm -rf /usr/local/libexec/pam-twofa

twofa-admin check
if [ -n "$old_lines" ]; then
    cat <<MSG

These PAM lines still name the earlier copy in /usr/local (now a link to the package's):
$old_lines
Replace each with the line from "twofa-admin pam-config" (it names
/usr/lib/python3/dist-packages/pam_twofa/pam_module.py, the same on Debian 12 and 13),
then run this script again to remove the link.
MSG
fi

# The host agent of the database backend ships with the package, disabled:
# it is enabled only when the policy selects storage.backend: postgresql.
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
cat <<MSG

pam-twofa $(dpkg-query -W -f='${Version}' pam-twofa) is installed (Debian package pam-twofa); sshd is unchanged.
To turn 2FA on for SSH, enroll yourself first (twofa-enroll --user YOU), keep a
root shell open, then install the lines from:
    twofa-admin pam-config                 # password + code
    twofa-admin pam-config --stack key     # SSH key + code
MSG
