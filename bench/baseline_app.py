"""The baseline: the same HTTP stack (gunicorn sync workers, Flask) answering {"cards": []}
after parsing the JSON body. The benchmark divides our cost by this one: what is left is the
cost of reading the record and running the rules."""
import json

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/cds-services/<service_id>")
def call(service_id):
    json.loads(request.get_data())
    return jsonify({"cards": []})


@app.get("/readyz")
def ready():
    return jsonify({"status": "pass"})
