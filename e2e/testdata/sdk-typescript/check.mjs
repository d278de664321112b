// Drives Blaxel's official TypeScript SDK (@blaxel/core) against this server:
// every membership operation the SDK has. Configured as its users do, through
// BL_API_URL, BL_WORKSPACE and BL_API_KEY (an API key, or a person's JWT for
// leaving) or BL_CLIENT_CREDENTIALS (a service account's, for the OAuth
// client-credentials flow). Prints one JSON line per call; exits 1 on the first failure.
import * as bl from "@blaxel/core";

const results = [];
function check(name, res, ok) {
  const line = { op: name, status: res.response?.status, data: res.data ?? null, error: res.error ?? null };
  results.push(line);
  console.log(JSON.stringify(line));
  if (!ok(res)) {
    console.error(`${name} failed: status ${line.status} ${JSON.stringify(line.error)}`);
    process.exit(1);
  }
}
const email = process.env.SDK_INVITEE;
const mode = process.argv[2];
if (mode === "admin") {
  check("inviteWorkspaceUser", await bl.inviteWorkspaceUser({ body: { email } }),
    (r) => r.response?.status === 200 && r.data?.email === email);
  check("listWorkspaceUsers", await bl.listWorkspaceUsers(),
    (r) => r.response?.status === 200 && r.data.some((u) => u.email === email));
  check("updateWorkspaceUserRole", await bl.updateWorkspaceUserRole({ path: { subOrEmail: email }, body: { role: "admin" } }),
    (r) => r.response?.status === 200 && r.data?.role === "admin");
  check("removeWorkspaceUser", await bl.removeWorkspaceUser({ path: { subOrEmail: email } }),
    (r) => r.response?.status === 200);
  check("inviteWorkspaceUser (bad email)", await bl.inviteWorkspaceUser({ body: { email: "not an email" } }),
    (r) => r.response?.status === 400 && r.error?.code === 400 && typeof r.error?.error === "string");
} else if (mode === "leave") {
  check("leaveWorkspace", await bl.leaveWorkspace({ path: { workspaceName: process.env.BL_WORKSPACE } }),
    (r) => r.response?.status === 200);
} else if (mode === "client-credentials") {
  // BL_CLIENT_CREDENTIALS = base64(client_id:client_secret): the SDK gets a
  // token from {BL_API_URL}/oauth/token, then calls with it.
  check("listWorkspaceUsers (client credentials)", await bl.listWorkspaceUsers(),
    (r) => r.response?.status === 200 && r.data.some((u) => u.email === process.env.SDK_EXPECT_EMAIL));
  // A second call reuses the token (its exp − iat says it is fresh).
  check("listWorkspaceUsers (client credentials, again)", await bl.listWorkspaceUsers(),
    (r) => r.response?.status === 200);
} else if (mode === "client-credentials-refused") {
  // Wrong credentials: the SDK reads `error` from the token endpoint's
  // answer and throws it (after its own retries).
  try {
    await bl.listWorkspaceUsers();
    console.error("listWorkspaceUsers with wrong client credentials did not fail");
    process.exit(1);
  } catch (e) {
    console.log(JSON.stringify({ op: "oauthToken (refused)", thrown: String(e.message) }));
    if (e.message !== "invalid_client") process.exit(1);
  }
} else {
  console.error("usage: node check.mjs admin|leave|client-credentials|client-credentials-refused");
  process.exit(2);
}
