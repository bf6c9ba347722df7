// The ksa inspector: every input is decoded and verified by ksa-core,
// compiled to WebAssembly (./pkg, built by `cargo xtask wasm`). Untrusted
// text only ever reaches the page through textContent.
import init, { decodeStatus, decodeToken, verifyToken } from "./pkg/ksa_wasm.js";

const $ = (id) => document.getElementById(id);
const STEPS = ["Generate", "Trust", "Sign", "RefreshTokens", "Retire"];
// What each step does, on the way from key `old` to key `next`.
const STEP_MEANING = {
  Generate: (old, next) => `generating key pair ${next}`,
  Trust: (old, next) => `publishing keys [${old}, ${next}]; waiting until every API server accepts ${next}`,
  Sign: (old, next) => `signing with ${next}; waiting until every API server signs with it`,
  RefreshTokens: (old, next) => `re-minting legacy tokens and refreshing bound tokens with key ${next}`,
  Retire: (old, next) => `publishing [${next}] only; key ${old} is deleted once no API server trusts it`,
};

let expiry = null; // seconds since the epoch, for the countdown

function list(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
}

function rows(dl, entries) {
  dl.replaceChildren();
  for (const [term, value] of entries) {
    if (value === undefined || value === null || value === "") continue;
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    if (value instanceof Node) dd.append(value); else dd.textContent = String(value);
    dl.append(dt, dd);
  }
}

function show(element, state, text) {
  element.dataset.state = state;
  element.textContent = text;
}

function badge(text) {
  const span = document.createElement("span");
  span.className = "badge";
  span.textContent = text;
  return span;
}

function date(seconds) {
  return seconds === undefined ? undefined : `${new Date(seconds * 1000).toISOString()} (${seconds})`;
}

function duration(seconds) {
  const s = Math.abs(Math.round(seconds));
  const parts = [[Math.floor(s / 86400), "d"], [Math.floor(s / 3600) % 24, "h"],
    [Math.floor(s / 60) % 60, "min"], [s % 60, "s"]];
  const first = parts.findIndex(([n]) => n > 0);
  return first < 0 ? "0 s" : parts.slice(first, first + 2).map(([n, u]) => `${n} ${u}`).join(" ");
}

function countdownText() {
  if (expiry === null) return "";
  const left = expiry - Date.now() / 1000;
  return left >= 0 ? `expires in ${duration(left)}` : `expired ${duration(left)} ago`;
}

function kindLabel(kind) {
  return { bound: "bound token (TokenRequest)", legacy: "legacy token (Secret)" }[kind]
    ?? "not a Kubernetes service-account token";
}

// The field holds a UTC time, like every time the page shows.
function verifyAt() {
  const value = $("at").value;
  return value ? Math.floor(new Date(`${value}Z`).getTime() / 1000) : undefined;
}

// The token as pasted, without an `Authorization: Bearer ` prefix.
function pastedToken() {
  return $("token").value.trim().replace(/^Bearer\s+/i, "");
}

// The kids of the pasted JWKS, the one the token names marked: the first
// thing an unknown_kid needs. Only kids are read; the JWKS is verified by
// ksa-core.
function renderKids(jwks, kid) {
  const items = [];
  let keys = [];
  try {
    keys = JSON.parse(jwks)?.keys ?? [];
  } catch {
    keys = [];
  }
  for (const key of Array.isArray(keys) ? keys.slice(0, 50) : []) {
    const li = document.createElement("li");
    const id = typeof key?.kid === "string" ? key.kid : "(no kid)";
    const matched = kid !== undefined && id === kid;
    li.textContent = matched ? `${id} (the token's key)` : id;
    if (matched) li.className = "matched";
    items.push(li);
  }
  $("jwks-kids").replaceChildren(...items);
}

// What a verdict did not establish, said plainly.
function renderNotChecked(options, kind) {
  const notes = [];
  if (options.issuers.length === 0) notes.push("The issuer was not checked: give the issuers to check it.");
  if (options.audiences.length === 0) notes.push("The audience was not checked: give the audiences to check it.");
  if (kind === "legacy") {
    notes.push("A legacy token is valid only while its Secret still holds it; the API server also checks the Secret, which this page cannot see.");
  }
  $("not-checked").replaceChildren(...notes.map((note) => {
    const li = document.createElement("li");
    li.textContent = note;
    return li;
  }));
}

function renderToken() {
  const jwt = pastedToken();
  const validity = $("validity");
  expiry = null;
  for (const id of ["identity", "lifetime", "header", "not-checked", "jwks-kids"]) $(id).replaceChildren();
  $("claims").textContent = "";
  if (!jwt) return show(validity, "empty", "Paste a token.");

  let decoded;
  try {
    decoded = decodeToken(jwt);
  } catch (error) {
    return show(validity, "error", `Cannot decode: ${error.kind}: ${error.message}`);
  }
  const { claims, header, serviceAccount: account } = decoded;
  const k8s = claims["kubernetes.io"];
  const ref = (r) => (r ? `${r.name} (uid ${r.uid})` : undefined);
  rows($("identity"), [
    ["Kind", badge(kindLabel(decoded.kind))],
    ["Service account", account && `${account.namespace}/${account.name}`],
    ["Service account UID", account?.uid],
    ["Authenticates as", account && `system:serviceaccount:${account.namespace}:${account.name}`],
    ["Pod", ref(k8s?.pod)],
    ["Node", ref(k8s?.node)],
    ["Secret", ref(k8s?.secret) ?? claims["kubernetes.io/serviceaccount/secret.name"]],
    ["Audiences", claims.aud?.join(", ")],
    ["Issuer", claims.iss],
  ]);
  expiry = claims.exp ?? null;
  const countdown = document.createElement("span");
  countdown.id = "expiry";
  countdown.textContent = expiry === null ? "never (no exp claim)" : countdownText();
  rows($("lifetime"), [
    ["Issued", date(claims.iat)],
    ["Not before", date(claims.nbf)],
    ["Expires", date(claims.exp)],
    ["", countdown],
    ["Kubelet refreshes after", date(k8s?.warnafter)],
    ["Token ID", claims.jti],
  ]);
  rows($("header"), [["Algorithm", header.alg], ["Key ID (kid)", header.kid ?? "none"], ["Type", header.typ]]);
  $("claims").textContent = JSON.stringify({ header, claims }, null, 2);

  const jwks = $("jwks").value.trim();
  if (!jwks) {
    return show(validity, "unchecked", "Signature not checked: paste the cluster's JWKS to verify it.");
  }
  renderKids(jwks, header.kid);
  try {
    const options = { issuers: list($("issuers").value), audiences: list($("audiences").value), at: verifyAt() };
    const verified = verifyToken(jwt, jwks, options);
    const accepted = ["signature", "lifetime"];
    if (options.issuers.length) accepted.push("issuer");
    if (options.audiences.length) accepted.push("audience");
    show(validity, "valid",
      `Valid: signed by key ${verified.kid} (${verified.algorithm}); ${accepted.join(", ")} accepted.`);
    renderNotChecked(options, decoded.kind);
  } catch (error) {
    show(validity, "invalid", `Invalid (${error.kind}): ${error.message}`);
  }
}

function renderStatus() {
  const text = $("status").value.trim();
  const summary = $("rotation-step");
  $("rotation-steps").replaceChildren();
  $("rotation-numbers").replaceChildren();
  if (!text) return show(summary, "empty", "Paste a status line.");
  let line;
  try {
    line = decodeStatus(text);
  } catch (error) {
    return show(summary, "error", `Not a status line: ${error.message}`);
  }
  const steps = line.steps;
  const current = steps.length ? STEPS.indexOf(steps[steps.length - 1]) : -1;
  if (line.issuer !== undefined) return renderIssuerStatus(line, steps, current);
  if (line.status) {
    show(summary, "completed", `Completed: every API server signs with and accepts only key ${line.keyVersion}.`);
  } else if (steps.length === 0) {
    show(summary, "error", `${line.reason}: these numbers match no step of a rotation to key ${line.keyVersion}.`);
  } else {
    const names = steps.join(" or ");
    const numbers = steps.map((s) => STEPS.indexOf(s) + 1).join(" or ");
    const failed = line.reason === "KSASigningKeyRotationProcessedReason" ? "" : ` (${line.reason})`;
    show(summary, "in-progress",
      `Rotating to key ${line.keyVersion}: step ${numbers} of 5, ${names}${failed}: ` +
      `${STEP_MEANING[steps[steps.length - 1]](line.keyVersion - 1, line.keyVersion)}.`);
  }
  renderSteps(line, steps, current);
  rows($("rotation-numbers"), [
    ["KSASigningKeyVersion", line.keyVersion],
    ["Tokens signed with", line.tokenVersion],
    ["Private key", line.privateKeyVersion],
    ["Public keys", `[${line.publicKeyVersions.join(", ")}]`],
    ["Status, reason", `${line.status ? "True" : "False"}, ${line.reason}`],
  ]);
}

// The five steps, those passed marked done and the line's marked current,
// in words as well as colour.
function renderSteps(line, steps, current) {
  $("rotation-steps").replaceChildren(...STEPS.map((step, index) => {
    const li = document.createElement("li");
    li.textContent = `${index + 1}. ${step}`;
    if (line.status || index < current) {
      li.className = "done";
      li.textContent += " (done)";
    } else if (steps.includes(step)) {
      li.className = "current";
      li.setAttribute("aria-current", "step");
      li.textContent += " (current)";
    }
    return li;
  }));
}

// An issuer rotation's line (SPEC section 10).
function renderIssuerStatus(line, steps, current) {
  const summary = $("rotation-step");
  if (line.status) {
    show(summary, "completed", `Completed: every API server signs with and accepts only issuer ${line.issuer}.`);
  } else if (steps.length === 0) {
    show(summary, "error", `${line.reason}: these issuers match no step of a rotation to issuer ${line.issuer}.`);
  } else {
    const names = steps.join(" or ");
    const numbers = steps.map((s) => STEPS.indexOf(s) + 1).join(" or ");
    show(summary, "in-progress", `Rotating to issuer ${line.issuer}: step ${numbers} of 5, ${names}.`);
  }
  renderSteps(line, steps, current);
  rows($("rotation-numbers"), [
    ["KSAIssuer", line.issuer],
    ["Tokens carry", line.tokenIssuer],
    ["Signing issuer", line.signingIssuer],
    ["Accepted issuers", `[${line.acceptedIssuers.join(", ")}]`],
    ["Status, reason", `${line.status ? "True" : "False"}, ${line.reason}`],
  ]);
}

async function fetchJwks() {
  const url = $("jwks-url").value.trim();
  if (!url) return;
  try {
    const response = await fetch(url, { credentials: "omit" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    $("jwks").value = await response.text();
  } catch (error) {
    $("jwks").value = "";
    show($("validity"), "error",
      `Could not fetch ${url}: ${error.message}. The server must allow this page's origin (CORS); otherwise paste the JWKS.`);
    return;
  }
  renderToken();
}

await init();
// For the console and the in-browser benchmark.
window.ksa = { decodeStatus, decodeToken, verifyToken };
$("loading").remove();
for (const id of ["token", "jwks", "issuers", "audiences", "at"]) $(id).addEventListener("input", renderToken);
$("status").addEventListener("input", renderStatus);
$("fetch-jwks").addEventListener("click", fetchJwks);
setInterval(() => {
  const element = $("expiry");
  if (element && expiry !== null) element.textContent = countdownText();
}, 1000);
renderToken();
renderStatus();
document.body.dataset.ready = "true";
