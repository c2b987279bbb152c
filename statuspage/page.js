
"use strict";
(() => {
	// Every value from status.json reaches the page as text (textContent,
	// dataset, className from a fixed set), never as markup.
	const period = 1000; // ms between the end of one refresh and the next
	const warnKinds = new Set(["node_down", "no_primary", "fenced", "promote_failed", "missing_grant", "replica_excluded"]);
	const states = new Set(["up", "down", "fenced", "unknown"]);
	const $ = (id) => document.getElementById(id);
	const nodesBody = document.querySelector("#nodes tbody");
	const eventsBody = document.querySelector("#events tbody");
	const updated = $("updated");
	const fetchError = $("fetch-error");
	let refreshes = 0;
	let failures = 0;

	const count = (n) => Number(n || 0).toLocaleString("en-US");

	const bytes = (n) => {
		n = Number(n || 0);
		const units = ["B", "KiB", "MiB", "GiB", "TiB"];
		let i = 0;
		while (Math.abs(n) >= 1024 && i < units.length - 1) {
			n /= 1024;
			i++;
		}
		return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
	};

	const seconds = (s) => {
		s = Number(s || 0);
		if (s === 0) return "0 s";
		if (s < 1) return (s * 1000).toFixed(0) + " ms";
		if (s < 120) return s.toFixed(1) + " s";
		return (s / 60).toFixed(1) + " min";
	};

	const millis = (ms) => {
		ms = Number(ms || 0);
		return (ms < 10 ? ms.toFixed(2) : ms.toFixed(0)) + " ms";
	};

	const cell = (tr, text, cls) => {
		const td = document.createElement("td");
		td.textContent = text;
		if (cls) td.className = cls;
		tr.appendChild(td);
		return td;
	};

	const nodeRow = (n, primary) => {
		const tr = document.createElement("tr");
		const state = states.has(n.state) ? n.state : "unknown";
		const isPrimary = primary !== "" && n.name === primary;
		tr.classList.add(state);
		if (isPrimary) tr.classList.add("primary");
		if (!isPrimary && !n.readable) tr.classList.add("excluded");
		tr.dataset.node = String(n.name);
		tr.dataset.role = String(n.role);
		tr.dataset.state = String(n.state);
		tr.dataset.readable = n.readable ? "true" : "false";
		tr.dataset.primary = isPrimary ? "true" : "false";

		const name = cell(tr, n.name, "name");
		if (isPrimary) {
			const badge = document.createElement("span");
			badge.className = "badge";
			badge.textContent = "primary";
			name.appendChild(badge);
		}
		cell(tr, n.role, "role");
		cell(tr, n.state, "state");
		cell(tr, isPrimary ? "—" : n.readable ? "yes" : "no", "readable");
		cell(tr, n.timeline ? String(n.timeline) : "—", "num timeline");
		cell(tr, n.lsn && n.lsn !== "0/0" ? n.lsn : "—", "num lsn");
		const replica = n.role !== "primary";
		cell(tr, replica ? bytes(n.lag_bytes) : "—", "num lag-bytes");
		cell(tr, replica ? seconds(n.lag_seconds) : "—", "num lag-time");
		cell(tr, count(n.reads), "num reads");
		cell(tr, count(n.writes), "num writes");
		cell(tr, count(n.errors), "num errors");
		cell(tr, count(n.misroutes), "num misroutes");
		cell(tr, count(n.retries), "num retries");
		cell(tr, millis(n.latency_ms), "num latency");
		cell(tr, n.last_error || "", "error");
		return tr;
	};

	const eventRow = (e) => {
		const tr = document.createElement("tr");
		if (warnKinds.has(e.kind)) tr.classList.add("warn");
		tr.dataset.kind = String(e.kind);
		cell(tr, String(e.at || "").replace("T", " ").replace("Z", ""), "at");
		cell(tr, String(e.kind || "").replaceAll("_", " "), "kind");
		cell(tr, e.node || "", "node");
		cell(tr, e.detail || "", "detail");
		return tr;
	};

	const draw = (s) => {
		const nodes = Array.isArray(s.nodes) ? s.nodes : [];
		const events = Array.isArray(s.events) ? s.events : [];
		const primary = typeof s.primary === "string" ? s.primary : "";
		const summary = $("primary");
		const readable = nodes.filter((n) => n.readable).length;
		if (primary) {
			summary.textContent = "Primary: " + primary + " · " + nodes.length + " nodes, " + readable + " serving reads";
			summary.className = "summary";
		} else {
			summary.textContent = "No primary known: writes wait · " + nodes.length + " nodes, " + readable + " serving reads";
			summary.className = "summary none";
		}
		nodesBody.replaceChildren(...nodes.map((n) => nodeRow(n, primary)));
		eventsBody.replaceChildren(...events.slice().reverse().map(eventRow));
		$("no-events").hidden = events.length > 0;
	};

	const refreshed = () => {
		refreshes++;
		const now = new Date();
		updated.dataset.refreshes = String(refreshes);
		updated.dataset.at = now.toISOString();
		updated.textContent = "Updated " + now.toLocaleTimeString() + " (refresh " + refreshes + ")";
		document.body.classList.remove("stale");
		fetchError.hidden = true;
	};

	const failed = (err) => {
		failures++;
		fetchError.dataset.failures = String(failures);
		fetchError.textContent = "Cannot refresh from status.json: " + (err && err.message ? err.message : String(err)) + "; showing the last data.";
		fetchError.hidden = false;
		document.body.classList.add("stale");
	};

	const refresh = async () => {
		try {
			const opts = { cache: "no-store", headers: { Accept: "application/json" } };
			if (typeof AbortSignal.timeout === "function") opts.signal = AbortSignal.timeout(5000);
			const resp = await fetch("status.json", opts);
			if (!resp.ok) throw new Error("HTTP " + resp.status);
			draw(await resp.json());
			refreshed();
		} catch (err) {
			failed(err);
		}
		setTimeout(refresh, period);
	};

	refresh();
})();
