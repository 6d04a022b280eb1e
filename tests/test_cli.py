"""The `flask users ...` commands, checked through the CLI runner and the API they govern."""

import re

import pytest


def test_create_user_with_password_option_can_log_in(runner, client):
    result = runner.invoke(args=["users", "create", "carol", "--password", "pw"])

    assert result.exit_code == 0, result.output
    assert client.get("/api/", auth=("carol", "pw")).status_code == 200


def test_create_user_prompts_twice_for_the_password(runner, client):
    result = runner.invoke(args=["users", "create", "carol"], input="pw\npw\n")

    assert result.exit_code == 0, result.output
    assert client.get("/api/", auth=("carol", "pw")).status_code == 200


def test_create_user_prompt_does_not_echo_the_password(runner):
    result = runner.invoke(args=["users", "create", "carol"], input="hunter2\nhunter2\n")

    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output


def test_create_user_with_mismatched_passwords_creates_nobody(runner, client):
    result = runner.invoke(args=["users", "create", "carol"], input="pw\nother\n")

    assert result.exit_code != 0
    assert "do not match" in result.output
    assert client.get("/api/", auth=("carol", "pw")).status_code == 401


def test_create_user_without_admin_flag_is_not_an_admin(runner, client):
    runner.invoke(args=["users", "create", "carol", "--password", "pw"])

    response = client.get("/api/trackings/", auth=("carol", "pw"))

    assert response.status_code == 403


def test_create_user_with_admin_flag_makes_an_admin(runner, client):
    result = runner.invoke(args=["users", "create", "carol", "--password", "pw", "--admin"])

    assert result.exit_code == 0, result.output
    assert client.get("/api/trackings/", auth=("carol", "pw")).status_code == 200


def test_create_duplicate_user_fails_with_a_one_line_error(runner, alice):
    result = runner.invoke(args=["users", "create", "alice", "--password", "pw"])

    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "alice" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_create_duplicate_user_keeps_the_old_password(runner, client, alice):
    runner.invoke(args=["users", "create", "alice", "--password", "pw"])

    response = client.get("/api/", auth=alice)

    assert response.status_code == 200


def test_create_user_with_empty_password_is_refused(runner, client):
    result = runner.invoke(args=["users", "create", "carol", "--password", ""])

    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert client.get("/api/", auth=("carol", "")).status_code == 401


def test_create_user_with_a_colon_in_the_name_is_refused(runner):
    result = runner.invoke(args=["users", "create", "ca:rol", "--password", "pw"])

    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert runner.invoke(args=["users", "list"]).output == ""


def test_list_users_shows_name_role_and_state(runner, alice, admin, make_user):
    make_user("carol", active=False)

    result = runner.invoke(args=["users", "list"])

    assert result.exit_code == 0, result.output
    assert [line.split() for line in result.output.splitlines()] == [
        ["alice", "user", "active"],
        ["carol", "user", "deactivated"],
        ["root", "admin", "active"],
    ]


def test_list_users_with_no_user_prints_nothing(runner):
    result = runner.invoke(args=["users", "list"])

    assert result.exit_code == 0
    assert result.output == ""


def test_set_password_makes_the_old_password_fail_despite_the_cache(runner, client, alice):
    assert client.get("/api/", auth=alice).status_code == 200  # now remembered as verified

    result = runner.invoke(args=["users", "set-password", "alice", "--password", "new"])

    assert result.exit_code == 0, result.output
    assert client.get("/api/", auth=alice).status_code == 401


def test_set_password_makes_the_new_password_work(runner, client, alice):
    assert client.get("/api/", auth=alice).status_code == 200

    result = runner.invoke(args=["users", "set-password", "alice", "--password", "new"])

    assert result.exit_code == 0, result.output
    assert client.get("/api/", auth=("alice", "new")).status_code == 200


def test_set_password_prompts_twice_for_the_password(runner, client, alice):
    result = runner.invoke(args=["users", "set-password", "alice"], input="new\nnew\n")

    assert result.exit_code == 0, result.output
    assert client.get("/api/", auth=("alice", "new")).status_code == 200


def test_set_password_to_empty_is_refused(runner, client, alice):
    result = runner.invoke(args=["users", "set-password", "alice", "--password", ""])

    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert client.get("/api/", auth=alice).status_code == 200


def test_deactivate_refuses_the_user_right_after_a_successful_request(runner, client, alice):
    assert client.get("/api/", auth=alice).status_code == 200  # now remembered as verified

    result = runner.invoke(args=["users", "deactivate", "alice"])

    assert result.exit_code == 0, result.output
    assert client.get("/api/", auth=alice).status_code == 401


def test_deactivate_shows_the_user_as_deactivated(runner, alice):
    runner.invoke(args=["users", "deactivate", "alice"])

    result = runner.invoke(args=["users", "list"])

    assert result.output.split() == ["alice", "user", "deactivated"]


def test_activate_lets_a_deactivated_user_in_again(runner, client, make_user):
    carol = make_user("carol", active=False)
    assert client.get("/api/", auth=carol).status_code == 401

    result = runner.invoke(args=["users", "activate", "carol"])

    assert result.exit_code == 0, result.output
    assert client.get("/api/", auth=carol).status_code == 200


@pytest.mark.parametrize(
    "args",
    [
        ["users", "set-password", "nobody", "--password", "pw"],
        ["users", "deactivate", "nobody"],
        ["users", "activate", "nobody"],
    ],
    ids=["set-password", "deactivate", "activate"],
)
def test_command_on_unknown_user_fails_with_a_one_line_error(runner, alice, args):
    result = runner.invoke(args=args)

    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "nobody" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bootstrap_creates_an_admin_with_a_printed_password(runner, client):
    result = runner.invoke(args=["users", "bootstrap"])

    assert result.exit_code == 0, result.output
    password = re.search(r"password: (\S+)", result.output).group(1)
    assert client.get("/api/trackings/", auth=("admin", password)).status_code == 200


def test_bootstrap_does_nothing_when_the_only_user_is_deactivated(runner, make_user):
    make_user("carol", active=False)

    result = runner.invoke(args=["users", "bootstrap"])

    assert result.exit_code == 0, result.output
    assert result.output == ""


def test_bootstrap_does_nothing_when_a_user_exists(runner, alice):
    result = runner.invoke(args=["users", "bootstrap"])

    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert runner.invoke(args=["users", "list"]).output.split() == ["alice", "user", "active"]
