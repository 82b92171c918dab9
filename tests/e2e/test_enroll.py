"""Self-service enrollment (``twofa-enroll``, docs/threat-model.md, issue 3) end to end.

Real users with real passwords live only in the containers, so the tool runs
there, as an unprivileged user on a real terminal: ``docker exec -it -u USER``
(docker allocates a pty) driven by pexpect, or an OpenSSH session with a pty.
That user's ``twofa-enroll`` goes through sudo and the installer's rule to
the ``enroll-self`` helper, exactly as on an admin's host.

Each test makes its own accounts (``make_user``), so nothing depends on the
order of the tests. TOTP codes come from pyotp, independently of the
product's ``totp`` module; QR codes are decoded by zbar's ``zbarimg``.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from e2e_harness import (
    ALICE_SECRET,
    PASSWORD_PORT,
    PASSWORDS,
    POLICY_PATH,
    current_code,
    ssh_login,
    totp_at,
    wait_for_fresh_step,
    wrong_code,
)
from e2e_harness import (
    CODE_PROMPT as LOGIN_CODE_PROMPT,
)
from e2e_terminal import (
    CODE_PROMPT,
    INTERRUPTED,
    PASSWORD_PROMPT,
    REPLACE_PROMPT,
    WRONG_CODE,
    WRONG_PASSWORD,
    decode_qr,
    enroll_terminal,
    parse_screen,
    qr_matrix_ansi,
    qr_matrix_utf8,
    record_fingerprint,
    record_path,
    recovery_codes,
    ssh_terminal,
    store_entries,
    wait_no_enroll_process,
)

pytestmark = pytest.mark.e2e

SELF_SERVICE = "/usr/libexec/pam-twofa/enroll-self"
ENROLLED = "Two-factor authentication is now on for {user}."
MSG_BAD = "Wrong verification code."
CURRENT_PROMPT = "Current code from your app, or a recovery code: "
WRONG_CURRENT = "Wrong code. Each wrong code counts toward locking the account."
LOCKED = "is locked until"


def login(user: str, password: str, code):
    return ssh_login(PASSWORD_PORT, user, password=password, code=code)


def enroll_as_root(host, user: str, secret: str) -> list:
    """Root's scripted enrollment with a known secret; returns the printed recovery codes.

    The verification code is the previous step's, so the current one is free for a login.
    """
    wait_for_fresh_step()
    done = host.run(["twofa-enroll", "--user", user, "--secret", secret, "--code", totp_at(secret, -1)])
    assert ENROLLED.format(user=user) in done.stdout, done.stdout
    codes = recovery_codes(done.stdout)
    assert len(codes) == 10
    return codes


def stored(host, user: str, field: str) -> str:
    """One field of the user's record as stored (read as root): ``key``, ``failures``, ``recovery_hashes``..."""
    text = host.run(["cat", record_path(user)]).stdout
    [value] = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith(field + " ")]
    return value


def recovery_left(host, user: str) -> int:
    status = json.loads(host.run(["twofa-admin", "status", user, "--json"]).stdout)
    [row] = status["users"]
    return row["recovery_codes_left"]


def check_uri(shown, user: str, hostname: str) -> None:
    """The otpauth URI names the issuer (the policy's default: the host name) and user@host, with defaults left out."""
    parts = urlsplit(shown.uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp"), shown.uri
    assert parts.path == f"/{hostname}:{user}@{hostname}", shown.uri
    assert parse_qs(parts.query, strict_parsing=True) == {"secret": [shown.secret], "issuer": [hostname]}, shown.uri
    assert re.fullmatch(r"([A-Z2-7]{4} ){7}[A-Z2-7]{4}", shown.grouped_secret), shown.grouped_secret
    assert len(base64.b32decode(shown.secret)) == 20  # 160 bits


@pytest.fixture(scope="module")
def container_hostname(password_host) -> str:
    return password_host.run(["hostname"]).stdout.strip()


# --------------------------------------------------------------------------
# 1. Enrolling yourself through a real terminal, then logging in


def test_wrong_password_is_refused_and_nothing_is_stored(password_host, make_user):
    user, password = make_user(password_host)
    term = enroll_terminal(password_host, user)
    try:
        for attempt in range(3):
            term.expect(PASSWORD_PROMPT.format(user=user))
            term.send_line(f"not-{password}")
            if attempt < 2:
                term.expect(WRONG_PASSWORD)
        status = term.wait_exit()
    finally:
        term.close()
    assert status == 1, term.transcript
    assert "wrong password; nothing was changed" in term.transcript
    assert "otpauth://" not in term.transcript and "Scan this QR code" not in term.transcript
    assert f"not-{password}" not in term.transcript, "the password must not be echoed"
    assert store_entries(password_host, user) == []


def test_self_service_enrollment_then_code_and_each_recovery_code_log_in(
    password_host, make_user, container_hostname, tmp_path
):
    user, password = make_user(password_host)
    term = enroll_terminal(password_host, user)
    try:
        term.expect(f"Setting up two-factor authentication for {user} on {container_hostname}.")
        term.expect(PASSWORD_PROMPT.format(user=user))
        term.send_line(f"wrong-{password}")
        term.expect(WRONG_PASSWORD)
        term.expect(PASSWORD_PROMPT.format(user=user))  # asked again
        term.send_line(password)
        term.expect(CODE_PROMPT)

        shown = parse_screen(term.transcript)
        check_uri(shown, user, container_hostname)
        assert decode_qr(qr_matrix_utf8(shown.qr_lines), tmp_path / "qr.png") == shown.uri
        assert store_entries(password_host, user) == [], "nothing is stored before a code verifies"

        term.send_line(wrong_code(shown.secret))
        term.expect(WRONG_CODE)
        term.expect(CODE_PROMPT)  # asked again
        assert store_entries(password_host, user) == []

        wait_for_fresh_step()
        term.send_line(totp_at(shown.secret, -1))  # pyotp; the current step stays free for the login
        term.expect(ENROLLED.format(user=user))
        status = term.wait_exit()
    finally:
        term.close()
    assert status == 0, term.transcript
    assert password not in term.transcript
    codes = recovery_codes(term.transcript)
    assert len(codes) == 10 and len(set(codes)) == 10, codes

    # Stored root-only, with the recovery codes only as hashes.
    fingerprint = record_fingerprint(password_host, user)
    assert fingerprint is not None and fingerprint.split()[3:5] == ["root", "600"]
    stored = password_host.run(["cat", record_path(user)]).stdout
    assert not [code for code in codes if code in stored or code.replace("-", "") in stored]

    first = login(user, password, lambda: current_code(shown.secret))
    assert first.ok, first
    assert first.prompts == ["Password: ", LOGIN_CODE_PROMPT]
    assert first.output.strip() == user

    # Each printed recovery code works exactly once at the code prompt.
    assert recovery_left(password_host, user) == 10
    for index, code in enumerate(codes):
        used = login(user, password, code)
        assert used.ok, (index, used)
        again = login(user, password, code)
        assert not again.ok, (index, again)
        assert again.asked_code and MSG_BAD in again.text, again.messages
    assert recovery_left(password_host, user) == 0


def test_three_wrong_codes_give_up_and_store_nothing(password_host, make_user):
    user, password = make_user(password_host)
    term = enroll_terminal(password_host, user)
    try:
        term.expect(PASSWORD_PROMPT.format(user=user))
        term.send_line(password)
        for _ in range(3):
            term.expect(CODE_PROMPT)
            term.send_line(wrong_code(parse_screen(term.transcript).secret))
        status = term.wait_exit()
    finally:
        term.close()
    assert status == 1, term.transcript
    assert term.transcript.count(WRONG_CODE) == 2
    assert "no valid code after 3 tries; nothing was stored" in term.transcript
    assert store_entries(password_host, user) == []


# --------------------------------------------------------------------------
# 2. The printed QR code decodes, independently, to the printed URI


@pytest.mark.parametrize("style", ["utf8", "ansi", "none"])
def test_printed_qr_code_decodes_to_the_printed_uri(password_host, make_user, container_hostname, tmp_path, style):
    user, password = make_user(password_host)
    term = enroll_terminal(password_host, user, "--qr", style)
    try:
        term.expect(PASSWORD_PROMPT.format(user=user))
        term.send_line(password)
        term.expect(CODE_PROMPT)
        term.interrupt()
        status = term.wait_exit()
    finally:
        term.close()
    assert status == 130
    shown = parse_screen(term.transcript)
    check_uri(shown, user, container_hostname)
    if style == "none":
        assert shown.qr_lines == []
        return
    modules = qr_matrix_utf8(shown.qr_lines) if style == "utf8" else qr_matrix_ansi(shown.qr_lines)
    # a quiet zone of light modules around the code
    assert not any(modules[0]) and not any(modules[1]) and not any(row[0] for row in modules), "no quiet zone"
    assert decode_qr(modules, tmp_path / f"qr-{style}.png") == shown.uri


# --------------------------------------------------------------------------
# 3. Another user cannot reach alice's enrollment, whatever they pass


@pytest.fixture
def alice_with_google_file(password_host, enroll):
    enroll(password_host, "alice", ALICE_SECRET)
    password_host.run(
        "install -m 0400 -o alice -g alice /dev/stdin /home/alice/.google_authenticator",
        input=f'{ALICE_SECRET}\n" TOTP_AUTH\n12345678\n87654321\n',
    )
    yield password_host
    password_host.run(["rm", "-f", "/home/alice/.google_authenticator"])


def test_another_user_cannot_reach_alices_enrollment(alice_with_google_file, make_user):
    host = alice_with_google_file
    before = record_fingerprint(host, "alice")
    assert before is not None
    mallory, mallory_password = make_user(host)
    alice_uid = host.run(["id", "-u", "alice"]).stdout.strip()
    evil = f"/tmp/{mallory}-evil"
    # mallory's own policy (state in her folder) and a Python package that would report if it ever ran as root
    host.run(
        f"mkdir -p {evil}/pam_twofa/cli && printf 'version: 1\\nstorage:\\n  state_dir: {evil}/state\\n' > {evil}/policy.yaml"
        f' && printf \'import os\\nif os.geteuid() == 0: open("{evil}/pwned", "w").close()\\n\''
        f" | tee {evil}/pam_twofa/__init__.py {evil}/sitecustomize.py"
        f" > {evil}/pam_twofa/cli/__init__.py",
        user=mallory,
    )
    gafile = "/home/alice/.google_authenticator"

    outputs = []

    def as_mallory(argv, env=()):
        done = host.run(["env", *env, *argv], user=mallory, check=False, input="")
        outputs.append(done.stdout + done.stderr)
        return done

    root_only = [
        ["twofa-enroll", "--user", "alice"],
        ["twofa-enroll", "--user=alice"],
        ["twofa-enroll", "--use", "alice"],  # an abbreviation argparse expands
        ["twofa-enroll", "--secret", ALICE_SECRET],
        ["twofa-enroll", "--code", "123456"],
        ["twofa-enroll", "--import-google-authenticator", gafile],
        ["twofa-enroll", "--policy", f"{evil}/policy.yaml"],
        ["twofa-enroll", "--issuer", "evil"],
        ["twofa-enroll", "--force"],
        ["twofa-enroll", "--recovery-codes", "--user", "alice"],
        ["sudo", "-n", SELF_SERVICE, "--user", "alice"],
        ["sudo", "-n", SELF_SERVICE, "--user", "alice", "--secret", ALICE_SECRET, "--code", "123456", "--force"],
        ["sudo", "-n", SELF_SERVICE, "--import-google-authenticator", gafile],
        ["sudo", "-n", SELF_SERVICE, "--policy", f"{evil}/policy.yaml"],
        ["sudo", "-n", SELF_SERVICE, "--recovery-codes", "--user=alice"],
    ]
    for argv in root_only:
        done = as_mallory(argv)
        assert done.returncode == 1, (argv, done)
        assert "only root can use this" in done.stderr, (argv, done.stderr)
        assert "Password for" not in done.stdout + done.stderr, argv  # refused before anything else

    # sudo lets her run the helper as root and nothing else, sets SUDO_UID itself and passes none of her environment.
    python_env = [f"PYTHONPATH={evil}", f"PYTHONSTARTUP={evil}/sitecustomize.py", "PYTHONINSPECT=1"]
    for argv, env in (
        (["sudo", "-n", "twofa-enroll", "--user", "alice"], []),
        (["sudo", "-n", "/usr/bin/twofa-enroll", "--user", "alice"], []),
        (["sudo", "-n", "/usr/bin/python3", SELF_SERVICE, "--user", "alice"], []),
        (["sudo", "-n", "-u", "alice", SELF_SERVICE], []),
        (["sudo", "-n", f"SUDO_UID={alice_uid}", SELF_SERVICE], []),
        (["sudo", "-n", f"PYTHONPATH={evil}", SELF_SERVICE], []),
        (["sudo", "-n", "--preserve-env=PYTHONPATH,PYTHONSTARTUP,PYTHONINSPECT", SELF_SERVICE], python_env),
        (["sudo", "-n", "-E", SELF_SERVICE], python_env),
        (["sudo", "-n", "cat", record_path("alice")], []),
    ):
        done = as_mallory(argv, env)
        assert done.returncode == 1, (argv, done)
        assert "sudo:" in done.stderr, (argv, done.stderr)
        assert "Password for" not in done.stdout, argv

    # Whatever environment she sets, the helper acts for her account only and runs none of her code.
    for argv, env in (
        (["twofa-enroll"], [f"SUDO_UID={alice_uid}", "SUDO_USER=alice", "USER=alice", "LOGNAME=alice"]),
        (["twofa-enroll", "--recovery-codes"], [f"SUDO_UID={alice_uid}", "USER=alice", "HOME=/home/alice"]),
        (["sudo", "-n", SELF_SERVICE], python_env + [f"SUDO_UID={alice_uid}"]),
    ):
        done = as_mallory(argv, env)
        assert f"Setting up two-factor authentication for {mallory} on " in done.stdout, (argv, done)
        assert "for alice" not in done.stdout + done.stderr
        # no terminal: refused before the password is asked, nothing changed
        assert done.returncode == 1 and "needs a terminal" in done.stderr, (argv, done)

    # The store cannot be read directly.
    for argv in (["ls", "/var/lib/pam-twofa"], ["cat", record_path("alice")], ["stat", record_path("alice")]):
        done = as_mallory(argv)
        assert done.returncode != 0 and "Permission denied" in done.stderr, (argv, done)

    # On a real terminal: alice's password at mallory's prompt is wrong for mallory.
    term = enroll_terminal(host, mallory)
    try:
        term.expect(PASSWORD_PROMPT.format(user=mallory))
        term.send_line(PASSWORDS["alice"])
        term.expect(WRONG_PASSWORD)
        term.expect(PASSWORD_PROMPT.format(user=mallory))
        term.interrupt()
        assert term.wait_exit() == 130
    finally:
        term.close()
    outputs.append(term.transcript)

    # --recovery-codes renews mallory's own codes, never alice's.
    mallory_secret = pyotp.random_base32(32)
    old_codes = enroll_as_root(host, mallory, mallory_secret)
    mallory_before = record_fingerprint(host, mallory)
    term = enroll_terminal(host, mallory, "--recovery-codes")
    try:
        term.expect(PASSWORD_PROMPT.format(user=mallory))
        term.send_line(mallory_password)
        term.expect(CURRENT_PROMPT)
        term.send_line(current_code(mallory_secret))
        term.expect("New recovery codes made")
        assert term.wait_exit() == 0
    finally:
        term.close()
    outputs.append(term.transcript)
    new_codes = recovery_codes(term.transcript)
    assert len(new_codes) == 10 and not set(new_codes) & set(old_codes)
    assert record_fingerprint(host, mallory) != mallory_before
    voided = login(mallory, mallory_password, old_codes[0])  # the old set stops working
    assert not voided.ok and voided.asked_code, voided
    renewed = login(mallory, mallory_password, new_codes[0])
    assert renewed.ok, renewed

    assert record_fingerprint(host, "alice") == before, "alice's record must be untouched"
    leaked = [text for text in outputs if ALICE_SECRET in text or ALICE_SECRET[:16] in text]
    assert not leaked, leaked
    assert host.run(["test", "-e", f"{evil}/pwned"], check=False).returncode == 1, "her code ran as root"
    assert host.run(["test", "-e", f"{evil}/state"], check=False).returncode == 1, "her policy was used"
    still = login("alice", PASSWORDS["alice"], lambda: current_code(ALICE_SECRET))
    assert still.ok and still.asked_code, still


# --------------------------------------------------------------------------
# 4. Importing a real google-authenticator file


def test_google_authenticator_file_imports_and_its_secret_and_scratch_codes_log_in(google_authenticator_cli, make_user):
    host = google_authenticator_cli
    user, password = make_user(host)
    path = f"/home/{user}/.google_authenticator"
    host.run(["google-authenticator", "-t", "-d", "-f", "-r", "3", "-R", "30", "-w", "3", "-q", "-s", path], user=user)
    assert host.run(["stat", "-c", "%U %a", path]).stdout.split() == [user, "400"]
    lines = host.run(["cat", path], user=user).stdout.splitlines()
    secret = lines[0]
    scratch = [line for line in lines[1:] if re.fullmatch(r"\d{8}", line)]
    assert re.fullmatch(r"[A-Z2-7]{16,}", secret), lines[0]
    assert '" TOTP_AUTH' in lines and len(scratch) == 5, lines

    wait_for_fresh_step()
    done = host.run(
        ["twofa-enroll", "--user", user, "--import-google-authenticator", path, "--code", totp_at(secret, -1)]
    )
    assert ENROLLED.format(user=user) in done.stdout, done.stdout
    assert "Your 5 google-authenticator scratch codes keep working as recovery codes." in done.stdout

    first = login(user, password, lambda: current_code(secret))
    assert first.ok and first.prompts == ["Password: ", LOGIN_CODE_PROMPT], first
    assert recovery_left(host, user) == 10 + 5  # new recovery codes, and the scratch codes beside them
    for code in scratch:
        used = login(user, password, code)
        assert used.ok, (code, used)
        again = login(user, password, code)
        assert not again.ok and MSG_BAD in again.text, (code, again)
    assert recovery_left(host, user) == 10


def test_symlinked_google_authenticator_file_is_refused(password_host, make_user):
    host = password_host
    user, _password = make_user(host)
    path = f"/home/{user}/.google_authenticator"
    # A valid file only root can read: had root followed the link, it would import it.
    bait_secret = pyotp.random_base32(32)
    bait = f"/root/{user}-google-authenticator"
    host.run(f"umask 077; printf '%s\\n\" TOTP_AUTH\\n11223344\\n' {bait_secret} > {bait}")
    shadow_hashes = [
        line.split(":")[1]
        for line in host.run(["cat", "/etc/shadow"]).stdout.splitlines()
        if len(line.split(":")[1]) > 3
    ]

    def import_(source):
        wait_for_fresh_step()
        return host.run(
            [
                "twofa-enroll",
                "--user",
                user,
                "--import-google-authenticator",
                source,
                "--code",
                totp_at(bait_secret, -1),
            ],
            check=False,
        )

    try:
        for target in ("/etc/shadow", bait):
            host.run(["ln", "-sfn", target, path], user=user)
            done = import_(path)
            assert done.returncode == 1, (target, done)
            assert "symbolic link" in done.stderr, (target, done.stderr)
            text = done.stdout + done.stderr
            assert "root:" not in text and bait_secret not in text
            assert not [h for h in shadow_hashes if h in text]
            assert store_entries(host, user) == [], target
        # Through a symlinked folder, or named directly: opened with the user's rights, so refused.
        host.run(["ln", "-sfn", "/root", f"/home/{user}/rootdir"], user=user)
        for source in (f"/home/{user}/rootdir/{bait.rsplit('/', 1)[1]}", "/etc/shadow", bait):
            done = import_(source)
            assert done.returncode == 1, (source, done)
            assert "Permission denied" in done.stderr, (source, done.stderr)
            assert bait_secret not in done.stdout + done.stderr
            assert store_entries(host, user) == [], source
    finally:
        host.run(["rm", "-f", bait])


# --------------------------------------------------------------------------
# 5. Interrupting at each step leaves the previous state as it was


def drive_to(term, step: str, user: str, password: str, current: str | None = None) -> None:
    """Take a twofa-enroll session to ``step``: password, then for an enrolled user replace and the
    ``current`` code (a recovery code: it is used up, the secret is not), then qr, code."""
    term.expect(PASSWORD_PROMPT.format(user=user))
    if step == "password":
        return
    term.send_line(password)
    if current is not None:
        term.expect(REPLACE_PROMPT)
        if step == "replace":
            return
        term.send_line("y")
        term.expect(CURRENT_PROMPT)
        if step == "current":
            return
        term.send_line(current)
    term.expect("or open this URI on the device:")
    if step == "qr":
        return
    term.expect(CODE_PROMPT)
    term.send_line(wrong_code(parse_screen(term.transcript).secret))
    term.expect(WRONG_CODE)
    term.expect(CODE_PROMPT)


@pytest.fixture(autouse=True)
def no_enrollment_left_behind(request):
    """A test of this section that fails with an enrollment still running (a Ctrl-C lost between
    the terminal, docker exec and sudo's own pty, under load) must fail alone, not every test after
    it: what it left is killed once it ends (each test still asserts that none is left itself)."""
    yield
    if "password_host" in request.fixturenames:
        request.getfixturevalue("password_host").run(["pkill", "-KILL", "-f", "enroll-self"], check=False)


STEPS = {True: ("password", "replace", "current", "qr", "code"), False: ("password", "qr", "code")}
PROVED = ("qr", "code")  # steps after the current code was accepted (and used up)


@pytest.fixture(params=[True, False], ids=["enrolled", "new"])
def someone(request, password_host, make_user):
    """(user, password, secret or None, recovery codes): enrolled by root, or not enrolled."""
    user, password = make_user(password_host)
    if not request.param:
        return user, password, None, []
    secret = pyotp.random_base32(32)
    return user, password, secret, enroll_as_root(password_host, user, secret)


def test_ctrl_c_at_each_step_changes_nothing(password_host, someone):
    """Nothing but the recovery code typed to prove the account, which is used up like at a login."""
    user, password, secret, codes = someone
    entries = store_entries(password_host, user)
    for index, step in enumerate(STEPS[secret is not None]):
        before = record_fingerprint(password_host, user)
        key = stored(password_host, user, "key") if secret else None
        left = recovery_left(password_host, user) if secret else 0
        term = enroll_terminal(password_host, user)
        try:
            drive_to(term, step, user, password, current=codes[index] if secret else None)
            term.interrupt()
            status = term.wait_exit()
        finally:
            term.close()
        assert status == 130, (step, term.transcript[-1000:])
        assert f"interrupted; {INTERRUPTED}" in term.transcript, step
        if secret and step in PROVED:
            assert stored(password_host, user, "key") == key, step
            assert recovery_left(password_host, user) == left - 1, step
        else:
            assert record_fingerprint(password_host, user) == before, step
        assert store_entries(password_host, user) == entries, step
    if secret is not None:
        still = login(user, password, lambda: current_code(secret))
        assert still.ok and still.asked_code, still


def test_closed_terminal_at_each_step_changes_nothing(password_host, someone):
    """The SSH connection goes away mid-enrollment: sshd hangs up the pty."""
    user, password, secret, codes = someone
    for index, step in enumerate(STEPS[secret is not None]):
        # An enrolled user logs in with a recovery code (each login changes the record: read it after).
        term = ssh_terminal(PASSWORD_PORT, user, password, code=codes[index] if secret else None)
        if secret is not None:
            proved = len([done for done in STEPS[True][:index] if done in PROVED])  # each used one more
            left = len(codes) - index - 1 - proved
            assert f"Recovery code accepted; {left} left." in term.transcript, term.transcript
        before = record_fingerprint(password_host, user)
        entries = store_entries(password_host, user)
        key = stored(password_host, user, "key") if secret else None
        left = recovery_left(password_host, user) if secret else 0
        try:
            term.send_line("twofa-enroll")
            drive_to(term, step, user, password, current=codes[-1 - index] if secret else None)
        finally:
            term.hang_up()
        wait_no_enroll_process(password_host)
        if secret and step in PROVED:
            assert stored(password_host, user, "key") == key, step
            assert recovery_left(password_host, user) == left - 1, step
        else:
            assert record_fingerprint(password_host, user) == before, step
        assert store_entries(password_host, user) == entries, step
    if secret is not None:
        still = login(user, password, lambda: current_code(secret))
        assert still.ok and still.asked_code, still


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL", "Ctrl-D"])
def test_killed_or_closed_input_at_the_code_prompt_changes_nothing(password_host, make_user, how):
    user, password = make_user(password_host)
    secret = pyotp.random_base32(32)
    codes = enroll_as_root(password_host, user, secret)
    entries = store_entries(password_host, user)
    term = enroll_terminal(password_host, user)
    try:
        drive_to(term, "code", user, password, current=codes[0])
        before = record_fingerprint(password_host, user)  # the recovery code is used up once accepted
        if how == "Ctrl-D":
            term.child.sendeof()
        else:
            pids = password_host.run(["pgrep", "-f", f"^/usr/bin/python3 -I {SELF_SERVICE}"]).stdout.split()
            assert len(pids) == 1, pids
            password_host.run(["kill", f"-{how[3:]}", pids[0]])
        status = term.wait_exit()
    finally:
        term.close()
    assert status != 0
    if how == "Ctrl-D":
        assert status == 130 and INTERRUPTED in term.transcript, term.transcript[-500:]
    wait_no_enroll_process(password_host)
    assert record_fingerprint(password_host, user) == before
    assert store_entries(password_host, user) == entries
    still = login(user, password, lambda: current_code(secret))
    assert still.ok and still.asked_code, still


# --------------------------------------------------------------------------
# 6. Re-running when enrolled asks before replacing


def test_rerun_when_enrolled_asks_and_no_keeps_the_old_secret(password_host, make_user):
    user, password = make_user(password_host)
    secret = pyotp.random_base32(32)
    enroll_as_root(password_host, user, secret)
    before = record_fingerprint(password_host, user)
    for answer in ("n", ""):  # "no", and Enter (the default is no)
        term = enroll_terminal(password_host, user)
        try:
            term.expect(PASSWORD_PROMPT.format(user=user))
            term.send_line(password)
            term.expect(f"2FA is already on for {user}. {REPLACE_PROMPT}")
            term.send_line(answer)
            term.expect("Nothing changed.")
            status = term.wait_exit()
        finally:
            term.close()
        assert status == 1, (answer, term.transcript)
        assert "otpauth://" not in term.transcript
        assert record_fingerprint(password_host, user) == before, answer
    still = login(user, password, lambda: current_code(secret))
    assert still.ok and still.asked_code, still


# --------------------------------------------------------------------------
# 7. Someone who knows the password (su) cannot replace or renew the second factor (issue 12)


@pytest.fixture
def notify_policy(scenario, password_host, smtp_server):
    """The scenario's policy (max_failures 3) with mail to the test's SMTP server; restored after."""
    original = password_host.run(["cat", POLICY_PATH]).stdout
    assert "\nemail:" not in original
    password_host.write_policy(
        original + "email:\n"
        '  address: "{user}@example.com"\n'
        "  smtp:\n"
        f"    host: {smtp_server.host}\n"
        f"    port: {smtp_server.port}\n"
        "    timeout: 10\n"
    )
    password_host.run(["twofa-admin", "check"])
    smtp_server.clear()
    yield smtp_server
    password_host.write_policy(original)


def su_shell(host, attacker: str, attacker_password: str, victim: str, victim_password: str):
    """The attacker's own SSH session, then ``su VICTIM`` with the victim's password: a shell as the victim."""
    term = ssh_terminal(PASSWORD_PORT, attacker, attacker_password)
    term.send_line(f"su {victim}")
    term.expect("Password: ")
    term.send_line(victim_password)
    term.send_line("PS1='E2E-''VICTIM> '")
    term.expect("E2E-VICTIM> ")
    term.send_line("id -un")
    assert victim in term.expect("E2E-VICTIM> ").split(), "su did not give a shell as the victim"
    return term


def exit_status(term) -> int:
    term.expect("E2E-VICTIM> ")
    term.send_line('echo "enroll""-exit=$?"')  # the echoed command line does not match
    term.expect("enroll-exit=")
    status = term.child.readline().strip()
    term.expect("E2E-VICTIM> ")
    return int(status)


def test_su_with_the_victims_password_cannot_replace_or_renew_their_2fa(password_host, make_user, notify_policy):
    host, smtp = password_host, notify_policy
    attacker, attacker_password = make_user(host)
    victim, victim_password = make_user(host)
    secret = pyotp.random_base32(32)
    codes = enroll_as_root(host, victim, secret)
    [first_notice] = smtp.wait_for(1)  # the admin's enrollment is told too
    assert first_notice["To"] == f"{victim}@example.com" and "enrolled" in first_notice.get_content()
    smtp.clear()
    key, hashes = stored(host, victim, "key"), stored(host, victim, "recovery_hashes")

    term = su_shell(host, attacker, attacker_password, victim, victim_password)
    try:
        # Replacing: the password and "y" are no longer enough; each wrong code counts toward the lockout.
        mark = len(term.transcript)
        term.send_line("twofa-enroll")
        term.expect(PASSWORD_PROMPT.format(user=victim))
        term.send_line(victim_password)
        term.expect(REPLACE_PROMPT)
        term.send_line("y")
        term.expect(f"Lost your phone? Ask an administrator to turn 2FA off for you (twofa-admin disable {victim}).")
        for _ in range(2):
            term.expect(CURRENT_PROMPT)
            term.send_line(wrong_code(secret))
            term.expect(WRONG_CURRENT)
        term.expect(CURRENT_PROMPT)
        term.interrupt()
        assert exit_status(term) == 130
        assert "Scan this QR code" not in term.transcript[mark:] and "otpauth://" not in term.transcript[mark:]
        assert len(stored(host, victim, "failures").split(",")) == 2, "the wrong codes were counted"

        # Renewing recovery codes: likewise; the third wrong code (max_failures: 3) locks the account.
        mark = len(term.transcript)
        term.send_line("twofa-enroll --recovery-codes")
        term.expect(PASSWORD_PROMPT.format(user=victim))
        term.send_line(victim_password)
        term.expect(CURRENT_PROMPT)
        term.send_line(wrong_code(secret))
        term.expect(f"2FA for {victim} {LOCKED}")
        term.expect(f"twofa-admin unlock {victim}")
        assert exit_status(term) == 1
        assert "Recovery codes:" not in term.transcript[mark:]

        # Locked: not even asked for a code, either way.
        for command, answers in (("twofa-enroll --recovery-codes", []), ("twofa-enroll", ["y"])):
            mark = len(term.transcript)
            term.send_line(command)
            term.expect(PASSWORD_PROMPT.format(user=victim))
            term.send_line(victim_password)
            for answer in answers:
                term.expect(REPLACE_PROMPT)
                term.send_line(answer)
            term.expect(f"2FA for {victim} {LOCKED}")
            assert exit_status(term) == 1, command
            assert CURRENT_PROMPT not in term.transcript[mark:], command
    finally:
        term.close()

    assert stored(host, victim, "key") == key, "the victim's secret must be unchanged"
    assert stored(host, victim, "recovery_hashes") == hashes, "and their recovery codes"
    assert smtp.messages == [], "nothing changed, nothing to tell"
    locked = login(victim, victim_password, lambda: current_code(secret))
    assert not locked.ok and "locked until" in locked.text, locked

    # The admin unlocks; the victim's own app still logs in.
    host.run(["twofa-admin", "unlock", victim])
    still = login(victim, victim_password, lambda: current_code(secret))
    assert still.ok and still.asked_code, still

    # With a valid current code (here a recovery code) the change is made, and the victim is told by mail.
    term = su_shell(host, attacker, attacker_password, victim, victim_password)
    try:
        term.send_line("twofa-enroll --recovery-codes")
        term.expect(PASSWORD_PROMPT.format(user=victim))
        term.send_line(victim_password)
        term.expect(CURRENT_PROMPT)
        term.send_line(codes[0])
        term.expect("New recovery codes made")
        assert exit_status(term) == 0
    finally:
        term.close()
    new_codes = recovery_codes(term.transcript)
    assert len(new_codes) == 10
    [notice] = smtp.wait_for(1)
    hostname = host.run(["hostname"]).stdout.strip()
    assert notice["To"] == f"{victim}@example.com" and notice.envelope_to == [f"{victim}@example.com"]
    assert victim in notice["Subject"] and hostname in notice["Subject"]
    body = notice.get_content()
    assert "new recovery codes" in body and f"twofa-admin disable {victim}" in body
    assert "run by " in body and "terminal " in body
    assert not [code for code in new_codes + codes if code in body or code.replace("-", "") in body]
    assert secret not in body
    syslog = host.syslog()
    assert f"twofa-enroll: user={victim} result=new recovery codes (from " in syslog
    assert f"twofa-enroll: user={victim} result=refused: bad code" in syslog
