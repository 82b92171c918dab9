#!/usr/bin/env bash
# Apply `twofa-admin pam-config --stack STACK` to /etc/pam.d/sshd and
# /etc/ssh/sshd_config.d as the README describes, and listen on 127.0.0.1:PORT.
set -euo pipefail
STACK=${1:?usage: configure-sshd password|key PORT}
PORT=${2:?usage: configure-sshd password|key PORT}
config=$(twofa-admin pam-config --stack "$STACK")
auth_line=$(printf '%s\n' "$config" | grep -E '^auth required .*pam_python\.so')
if [ "$STACK" = password ]; then
    # right after "@include common-auth"
    awk -v line="$auth_line" '{print} /^@include common-auth/ {print line}' /etc/pam.d/sshd > /tmp/sshd.pam
else
    # "@include common-auth" replaced by the module and pam_permit
    awk -v line="$auth_line" '/^@include common-auth/ {print line; print "auth required pam_permit.so"; next} {print}' /etc/pam.d/sshd > /tmp/sshd.pam
fi
install -m 0644 /tmp/sshd.pam /etc/pam.d/sshd && rm /tmp/sshd.pam
{
    printf '%s\n' "$config" | sed -n '/sshd_config/,$p' | grep -vE '^(#|$)'
    echo "Port $PORT"
    echo "ListenAddress 127.0.0.1"
} > /etc/ssh/sshd_config.d/pam-twofa.conf
# OpenSSH 9.8+ (Debian 13) refuses a source address for a while after failed
# logins (PerSourcePenalties). The test clients all come from 127.0.0.1 and fail
# on purpose (wrong codes, lockout): exempt loopback, in a file of its own so
# that pam-twofa.conf stays the README's lines. Debian 12's sshd has no such option.
rm -f /etc/ssh/sshd_config.d/e2e-loopback.conf
mkdir -p /run/sshd
if /usr/sbin/sshd -T 2>/dev/null | grep -qi '^persourcepenalties '; then
    echo "PerSourcePenaltyExemptList 127.0.0.1" > /etc/ssh/sshd_config.d/e2e-loopback.conf
fi
mkdir -p /run/sshd
/usr/sbin/sshd -t
