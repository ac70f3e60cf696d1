/* "Is my version affected?" (the home page's version box), the wall's clause switch, the
 * release pages' Starlette filter and the cell pages' citation clause picker. Plain script,
 * no third-party code: every datum it reads is embedded in the page as JSON or, for the
 * citation picker, in a script file of the site's own that sets a global (js/cite-data.js,
 * no fetch), so it works offline and from disk. */
(function () {
  "use strict";

  function json(id) {
    var el = document.getElementById(id);
    if (!el) {
      return null;
    }
    try {
      return JSON.parse(el.textContent);
    } catch (e) {
      return null;
    }
  }

  function parts(version) {
    return version.split(".").map(function (p) {
      var n = parseInt(p, 10);
      return isNaN(n) ? 0 : n;
    });
  }

  function compare(a, b) {
    var pa = parts(a), pb = parts(b);
    for (var i = 0; i < Math.max(pa.length, pb.length); i++) {
      var d = (pa[i] || 0) - (pb[i] || 0);
      if (d) {
        return d;
      }
    }
    return 0;
  }

  /* "v0.100", "fastapi==0.100.0 " -> "0.100" / "0.100.0" */
  function normalise(text) {
    return (text || "").trim().toLowerCase().replace(/^(fastapi|starlette)\s*(==|@|\s)\s*/, "")
      .replace(/^v/, "");
  }

  function el(tag, text, attrs) {
    var node = document.createElement(tag);
    if (text) {
      node.textContent = text;
    }
    Object.keys(attrs || {}).forEach(function (k) {
      node.setAttribute(k, attrs[k]);
    });
    return node;
  }

  /* ---- The version box ------------------------------------------------------------------ */

  function lookup(data, fastapi, starlette) {
    var releases = data.releases, known = Object.keys(releases);
    var v = normalise(fastapi), st = normalise(starlette);
    if (!v) {
      return {text: "Type a FastAPI version, for example " + (known[known.length - 1] || "") + "."};
    }
    if (!releases[v] && /^\d+\.\d+$/.test(v)) {
      /* "0.100": the newest measured patch release of that line */
      var line = known.filter(function (k) { return k.indexOf(v + ".") === 0; });
      if (line.length) {
        v = line[line.length - 1];
      }
    }
    var release = releases[v];
    if (!release) {
      if (data.unmeasured.indexOf(v) >= 0) {
        return {text: "FastAPI " + v + " is a release, but it has not been measured yet."};
      }
      var before = known.filter(function (k) { return compare(k, v) < 0; }).pop();
      var after = known.filter(function (k) { return compare(k, v) > 0; })[0];
      var near = [before, after].filter(Boolean);
      return {
        text: "FastAPI " + v + " is not a release this site knows." +
          (near.length ? " The nearest measured releases: " : ""),
        links: near.map(function (k) { return [k, releases[k].page]; }),
        unknown: true
      };
    }
    var href = release.page + (st ? "?starlette=" + encodeURIComponent(st) : "");
    var n = release.hazards.length;
    var text = "FastAPI " + v + ": " + (n ? n + " hazard" + (n === 1 ? "" : "s") + " (" +
      release.hazards.join(", ") + ")" : "no hazard of the catalogue") + ".";
    var stOk = !st || release.starlette.indexOf(st) >= 0;
    if (!stOk) {
      text += " It was measured with Starlette " + release.starlette.join(", ") + ", not " +
        st + ": the page shows those.";
    }
    return {text: text, links: [["Open the FastAPI " + v + " page", href]], href: href,
      go: stOk};
  }

  function versionBox() {
    var form = document.getElementById("bgm-version");
    var data = json("bgm-version-data");
    if (!form || !data) {
      return;
    }
    var answer = document.getElementById("bgm-version-answer");

    function show(result) {
      answer.textContent = result.text;
      answer.setAttribute("data-state", result.unknown ? "unknown" : (result.href ? "found" : ""));
      (result.links || []).forEach(function (pair, i) {
        answer.appendChild(document.createTextNode(i ? " · " : " "));
        answer.appendChild(el("a", pair[0], {href: pair[1]}));
      });
    }

    function run() {
      return lookup(data, form.elements.fastapi.value, form.elements.starlette.value);
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var result = run();
      show(result);
      if (result.go) {
        window.location.href = result.href;
      }
    });
    /* index.html#version=0.100.0&starlette=0.27.0 fills the box and answers in place */
    var hash = window.location.hash.replace(/^#/, "");
    if (hash.indexOf("version=") >= 0) {
      hash.split("&").forEach(function (pair) {
        var kv = pair.split("=");
        var value = decodeURIComponent(kv[1] || "");
        if (kv[0] === "version") {
          form.elements.fastapi.value = value;
        } else if (kv[0] === "starlette") {
          form.elements.starlette.value = value;
        }
      });
      show(run());
    }
  }

  /* ---- A release page, narrowed to one Starlette version -------------------------------- */

  function releaseFilter() {
    var match = /[?&]starlette=([^&#]+)/.exec(window.location.search);
    if (!match) {
      return;
    }
    var st = normalise(decodeURIComponent(match[1]));
    document.querySelectorAll(".bgm-hazard").forEach(function (item) {
      var only = (item.getAttribute("data-starlette") || "").split(" ").filter(Boolean);
      if (only.length && only.indexOf(st) < 0) {
        item.classList.add("bgm-hazard-other");
        item.appendChild(el("span", " Not seen with Starlette " + st + ".",
          {"class": "bgm-hazard-note"}));
      }
    });
  }

  /* ---- The home page's wall, recoloured by any headline clause -------------------------- */

  function wallSwitch() {
    var select = document.getElementById("bgm-wall-clause");
    var data = json("bgm-wall-data");
    var wall = document.getElementById("bgm-wall");
    if (!select || !data || !wall) {
      return;
    }
    var legend = wall.parentNode.querySelector(".bgm-wall-legend");

    function draw(clause) {
      var entry = data.clauses[clause];
      if (!entry) {
        return;
      }
      var counts = {};
      var tiles = wall.children;
      for (var i = 0; i < tiles.length && i < entry.tiles.length; i++) {
        var cls = entry.tiles[i][0];
        counts[cls] = (counts[cls] || 0) + 1;
        tiles[i].className = "bgm-tile b-" + cls;
        tiles[i].title = "FastAPI " + data.versions[i] + ": " + entry.labels[entry.tiles[i][1]];
      }
      wall.setAttribute("data-clause", clause);
      if (legend) {
        legend.textContent = "";
        Object.keys(data.names).forEach(function (cls) {
          if (!counts[cls]) {
            return;
          }
          var li = el("li");
          li.appendChild(el("span", "\u00a0", {"class": "bgm-swatch b-" + cls}));
          li.appendChild(document.createTextNode(" " + data.names[cls] + " (" + counts[cls] + ")"));
          legend.appendChild(li);
        });
      }
    }

    select.addEventListener("change", function () {
      draw(select.value);
    });
    if (select.value !== select.options[0].value) {
      draw(select.value); /* a browser that restored the select's state */
    }
  }

  /* ---- A cell page's citation, for any clause the cell measured ------------------------- */

  function citePicker() {
    var select = document.getElementById("bgm-cite-clause");
    var page = json("bgm-cite-data");
    var shared = window.bgmCite; /* js/cite-data.js, loaded by the cell pages' template */
    var target = document.getElementById("bgm-cite-text");
    if (!select || !page || !shared || !target) {
      return;
    }
    var base = target.textContent, chosen = select.value;
    /* A citation is three lines: the clause's own (shared.heads), "<page.p><outcome text> \"
     * with the clause's outcome text shared.texts[clause][page.c[clause]] = [verdict, text],
     * and the cell's last line, the same for every clause (the page's own citation has it).
     * The page carries the cited clause's option only; the others come from the data, in
     * spec order (an index of -1: the cell has nothing to cite for that clause). */
    while (select.firstChild) {
      select.removeChild(select.firstChild);
    }
    shared.clauses.forEach(function (cid, i) {
      var k = page.c[i];
      if (k === undefined || k < 0) {
        return;
      }
      var option = el("option", cid + " \u00b7 " + shared.texts[i][k][0], {value: cid});
      option.selected = cid === chosen;
      select.appendChild(option);
    });
    select.addEventListener("change", function () {
      var i = shared.clauses.indexOf(select.value);
      if (select.value === chosen || i < 0) {
        target.textContent = base;
        return;
      }
      var lines = base.split("\n");
      lines[0] = shared.heads[i];
      lines[1] = page.p + shared.texts[i][page.c[i]][1] + " \\";
      target.textContent = lines.join("\n");
    });
  }

  function init() {
    versionBox();
    releaseFilter();
    wallSwitch();
    citePicker();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
