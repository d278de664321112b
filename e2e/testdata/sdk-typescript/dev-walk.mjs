// The invitation walk against `controlplane serve --dev` with Blaxel's
// TypeScript SDK (@blaxel/core), configured from what serve --dev prints
// (BL_API_URL, BL_WORKSPACE, BL_API_KEY), and the dev routes over plain
// HTTP (CONTROLPLANE_DEV_URL): invite, read the accept link from the
// mailbox, accept as the invitee, advance the clock past the expiry and
// see the second invitation expired. TestSDK_TypeScriptDevWalk runs it.
// Prints one JSON line per step; exits 1 on the first failure.
import * as bl from "@blaxel/core";

const api = process.env.BL_API_URL;
const dev = process.env.CONTROLPLANE_DEV_URL;
const workspace = process.env.BL_WORKSPACE;

function step(name, ok, detail) {
  console.log(JSON.stringify({ step: name, ok, detail }));
  if (!ok) process.exit(1);
}

async function devCall(method, path, body) {
  const res = await fetch(dev + path, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, data: res.status === 204 ? null : await res.json() };
}

// A person's token from the dev server's issuer, to act as the invitee.
async function tokenFor(sub, email) {
  const { data } = await devCall("POST", "/tokens", { sub, email });
  return data.token;
}

async function accept(ws, token) {
  const res = await fetch(`${api}/workspaces/${encodeURIComponent(ws)}/join`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}` },
  });
  return res.status;
}

const bob = "bob@example.com";
const invite = await bl.inviteWorkspaceUser({ body: { email: bob } });
step("inviteWorkspaceUser", invite.response?.status === 200 && invite.data?.email === bob, invite.response?.status);

const box = await devCall("GET", `/mailbox?to=${encodeURIComponent(bob)}`);
const mail = box.data?.emails?.[0];
step("mailbox", box.status === 200 && box.data.emails.length === 1 && mail.text.includes(mail.acceptUrl), mail?.acceptUrl);

// The accept link names the workspace: …/invitations/<workspace>?email=…
const linked = decodeURIComponent(new URL(mail.acceptUrl).pathname.split("/").pop());
step("accept link", linked === workspace, linked);
step("accept as the invitee", (await accept(linked, await tokenFor("bob", bob))) === 200);

const users = await bl.listWorkspaceUsers();
step("listWorkspaceUsers", users.data?.some((u) => u.email === bob && u.accepted), users.response?.status);

const carol = "carol@example.com";
const second = await bl.inviteWorkspaceUser({ body: { email: carol } });
step("invite carol", second.response?.status === 200);
const clock = await devCall("POST", "/clock/advance", { seconds: 8 * 24 * 3600 });
step("advance the clock 8 days", clock.status === 200 && clock.data.offsetSeconds === 8 * 24 * 3600, clock.data?.now);

const later = await bl.listWorkspaceUsers();
step("carol's invitation expired", later.data?.some((u) => u.email === carol && u.expired === true), later.response?.status);
step("accepting it is refused", (await accept(workspace, await tokenFor("carol", carol))) === 404);

const reset = await devCall("POST", "/reset");
const empty = await devCall("GET", "/mailbox");
step("reset", reset.status === 200 && empty.data.emails.length === 0);
