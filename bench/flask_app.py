"""The classic Flask model service: scikit-learn in the process, POST /predict with
{"features": [[...], ...]} in and {"prediction": [...]} out. Run under gunicorn:

    MODEL_PATH=model.joblib gunicorn -w 5 -b 127.0.0.1:PORT flask_app:app
"""
import os

import joblib
import numpy as np
from flask import Flask, jsonify, request

app = Flask(__name__)
model = joblib.load(os.environ["MODEL_PATH"])


@app.post("/predict")
def predict():
    features = np.asarray(request.get_json(force=True)["features"], dtype=np.float32)
    if features.ndim == 1:
        features = features[None, :]
    return jsonify(prediction=model.predict(features).tolist())


@app.get("/health")
def health():
    return "ok"
