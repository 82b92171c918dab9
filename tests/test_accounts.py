"""accounts: the user database adapter. Real pwd/grp lookups of root, getgrouplist counted."""

import os

import pytest

from pam_twofa.policy import Policy
from pam_twofa.system import accounts


@pytest.fixture
def grouplist_calls(monkeypatch):
    calls = []
    real = os.getgrouplist

    def counted(user, gid):
        calls.append(user)
        return real(user, gid)

    monkeypatch.setattr(os, "getgrouplist", counted)
    return calls


def test_lookup_reads_the_account_and_its_groups_only_when_asked(grouplist_calls):
    account = accounts.lookup("root")
    assert account is not None
    assert (account.name, account.uid, account.gid) == ("root", 0, 0)
    assert grouplist_calls == []
    assert 0 in account.gids and account.groups_known
    assert account.gids == set(os.getgrouplist("root", 0))
    assert grouplist_calls == ["root", "root"]  # read once by the account, once by the assertion


def test_unknown_and_invalid_names_are_none():
    assert accounts.lookup("no-such-user-pam-twofa") is None
    assert accounts.lookup("") is None
    assert accounts.lookup("a\0b") is None


def test_a_policy_without_groups_never_reads_the_users_groups(grouplist_calls):
    account = accounts.lookup("root")
    assert account is not None
    facts = accounts.facts(Policy("/p", mode="all", exempt_networks=("10.0.0.0/8",)), account, None, "192.0.2.1")
    assert grouplist_calls == []
    assert facts.gids == {0} and facts.groups_known and facts.group_ids == {}


@pytest.mark.parametrize(
    "values", [{"mode": "groups", "enforce_groups": ("root",)}, {"mode": "off", "exempt_groups": ("root",)}]
)
def test_a_policy_with_groups_reads_them(grouplist_calls, values):
    account = accounts.lookup("root")
    assert account is not None
    facts = accounts.facts(Policy("/p", **values), account, None, None)
    assert grouplist_calls == ["root"]
    assert facts.gids == set(os.getgrouplist("root", 0)) and facts.group_ids == {"root": 0}


def test_a_group_list_that_cannot_be_read_leaves_the_primary_group_and_says_so(monkeypatch):
    def broken(_user, _gid):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "getgrouplist", broken)
    account = accounts.lookup("root")
    assert account is not None
    assert account.gids == {0} and account.groups_known is False
    facts = accounts.facts(Policy("/p", mode="groups", enforce_groups=("staff",)), account, None, None)
    assert facts.groups_known is False
