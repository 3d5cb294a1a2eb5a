/*
 * Web workers for pages opened from the file system.
 *
 * Browsers refuse to start a Worker from a page opened from file://, and Material for
 * MkDocs runs its search in one. On such a page this script replaces Worker with a
 * stand-in that runs the worker's script in a hidden iframe of the page (which may load
 * scripts from the file system) and passes messages both ways, asynchronously, as a
 * worker would. It covers what the search worker uses: postMessage, "message" events,
 * importScripts (returning a promise, which the search worker awaits) and terminate.
 *
 * Its name contains "iframe-worker", so that the offline plugin, which would otherwise
 * add a polyfill fetched from a CDN, leaves it to this file: the site needs no network.
 */
(function () {
  "use strict";
  if (location.protocol !== "file:") {
    return;
  }

  function load(scope, url) {
    return new Promise(function (resolve, reject) {
      var script = scope.document.createElement("script");
      script.src = new URL(url, scope.document.baseURI).href;
      script.onload = function () { resolve(); };
      script.onerror = function () { reject(new Error("cannot load " + url)); };
      scope.document.head.appendChild(script);
    });
  }

  class IFrameWorker extends EventTarget {
    constructor(url) {
      super();
      var worker = this;
      this.onmessage = null;
      this.onerror = null;
      this.pending = [];
      this.ready = false;
      this.frame = document.createElement("iframe");
      this.frame.hidden = true;
      this.frame.setAttribute("aria-hidden", "true");
      document.body.appendChild(this.frame);
      var scope = this.frame.contentWindow;
      var base = scope.document.createElement("base");
      base.href = new URL(url, location.href).href;
      scope.document.head.appendChild(base);
      // The worker's postMessage talks to the page; importScripts loads into the frame.
      scope.postMessage = function (data) {
        setTimeout(function () { worker.receive(data); }, 0);
      };
      scope.importScripts = function () {
        return Promise.all(Array.prototype.map.call(arguments, function (each) {
          return load(scope, each);
        }));
      };
      load(scope, base.href).then(function () {
        worker.ready = true;
        worker.pending.splice(0).forEach(function (data) { worker.send(data); });
      }, function (error) {
        var event = new ErrorEvent("error", { message: error.message, error: error });
        if (worker.onerror) { worker.onerror(event); }
        worker.dispatchEvent(event);
      });
    }

    receive(data) {
      var event = new MessageEvent("message", { data: data });
      if (this.onmessage) { this.onmessage(event); }
      this.dispatchEvent(event);
    }

    send(data) {
      var scope = this.frame.contentWindow;
      setTimeout(function () {
        scope.dispatchEvent(new scope.MessageEvent("message", { data: data }));
      }, 0);
    }

    postMessage(data) {
      if (this.ready) { this.send(data); } else { this.pending.push(data); }
    }

    terminate() {
      this.frame.remove();
    }
  }

  window.Worker = IFrameWorker;
  window.IFrameWorker = IFrameWorker; // the search worker looks for it to find its files
})();
