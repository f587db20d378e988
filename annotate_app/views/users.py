"""Users page (admin): create accounts, change roles, deactivate, reset passwords, edit guidelines."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from annotate_app import ui
from rlhf import annotation as ann
from rlhf import auth, exclusion
from storage.errors import StoreError
from storage.records import ROLES

admin = ui.require_page("users")
store = ui.store()

def _keys(form: str, *names: str) -> tuple[str, ...]:
    """The widget keys of one form, with a version that every reset of the form bumps: the browser keeps a
    widget's last value for as long as its key lives, so a form reset by popping its keys could still send the
    stale values back (a second Save then undid another admin's change)."""
    version = st.session_state.get(f"users.version.{form}", 0)
    return tuple(f"{name}_{version}" for name in names)


def _reset_after(form: str, notice: tuple[str, str]) -> None:
    """Rerun with ``form`` fresh (an edit form showing the account as stored), the table refreshed, and the
    notice shown once above the forms."""
    st.session_state.pop(f"users.shown.{form}", None)
    st.session_state[f"users.version.{form}"] = st.session_state.get(f"users.version.{form}", 0) + 1
    st.session_state["users.notice"] = notice
    st.rerun()


st.title("Users")

users = auth.list_users(store)
excluded = exclusion.excluded_annotators(store)
st.dataframe(
    pd.DataFrame([
        {"user": u.annotator_id, "name": u.display_name, "role": u.role, "active": u.active, "kind": u.kind,
         "excluded labels": excluded[u.annotator_id].labels if u.annotator_id in excluded else 0,
         "created": u.created_at}
        for u in users
    ]),
    hide_index=True, width="stretch",
)
if excluded:
    st.caption("Excluded labels: a manager excluded them on the Agreement page (or `recfeedback users exclude`); "
               "they stay in the store and can be restored there.")
ui.one_shot_notice("users.notice")

col_new, col_edit = st.columns(2, gap="large")
with col_new, st.form("users_create"):
    st.subheader("New account")
    name_key, display_key, role_key, password_key = _keys(
        "create", "users_new_name", "users_new_display", "users_new_role", "users_new_password")
    name = st.text_input("User name", key=name_key)
    display = st.text_input("Display name (optional)", key=display_key)
    role = st.selectbox("Role", ROLES, key=role_key)
    password = st.text_input("Initial password (8+ characters)", type="password", key=password_key)
    if st.form_submit_button("Create account", type="primary"):
        try:
            created = auth.create_user(store, name.strip(), password, role, display_name=display.strip() or None)
        except (auth.AuthError, StoreError) as exc:
            st.error(str(exc))  # what was typed stays, to be corrected
        else:
            _reset_after("create", ("success", f"Created {created.annotator_id} ({created.role})."))

with col_edit:
    st.subheader("Change an account")
    names = [u.annotator_id for u in users]
    target = st.selectbox("Account", names, key="users_edit_target")
    current = next((u for u in users if u.annotator_id == target), None)
    if current is not None:
        form = f"edit.{target}"
        role_key, active_key, password_key = _keys(
            form, f"users_edit_role_{target}", f"users_edit_active_{target}", f"users_edit_password_{target}")
        shown_key = f"users.shown.{form}"
        # The account as these widgets show it, kept from their first run: a save compares it with the store.
        shown = st.session_state.setdefault(shown_key, current)
        # Widgets are keyed per account so that picking another account shows that account's values.
        with st.form(f"users_edit_{target}"):
            new_role = st.selectbox("Role", ROLES, index=ROLES.index(shown.role), key=role_key)
            active = st.checkbox("Active (may log in)", value=shown.active, key=active_key)
            new_password = st.text_input("New password (leave empty to keep)", type="password", key=password_key)
            if st.form_submit_button("Save changes"):
                try:  # only what the admin changed, and only if nobody changed the account since it was shown
                    auth.update_account(store, target, by=admin.annotator_id, as_shown=shown,
                                        role=new_role if new_role != shown.role else None,
                                        active=active if active != shown.active else None,
                                        password=new_password or None)
                except auth.AccountChangedError as exc:
                    _reset_after(form, ("error", str(exc)))
                except (auth.AuthError, StoreError) as exc:
                    st.error(str(exc))
                else:
                    _reset_after(form, ("success", f"Saved {target}."))

st.divider()
st.subheader("Labelling guidelines")
st.caption("Markdown shown in the Label page's sidebar. Each save is kept as a new version.")
with st.form("users_guidelines"):
    body = st.text_area("Guidelines", value=ann.get_guidelines(store), height=260, key="users_guidelines_body")
    if st.form_submit_button("Save guidelines"):
        try:
            version = ann.set_guidelines(store, body, updated_by=admin.annotator_id)
        except StoreError as exc:
            st.error(str(exc))
        else:
            st.cache_data.clear()
            st.success(f"Saved as version {version}.")
